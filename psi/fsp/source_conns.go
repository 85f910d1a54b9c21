package fsp

import "github.com/postsockets/postsockets/psi/fsp/internal/wire"

// countConn counts a new connection from from against its source's
// bound on l (Config.MaxConnsPerSource; a source is an IPv4 address or
// an IPv6 /64, as in psi/quic and psi/tcp) and returns the func that
// gives its place back, once. A source at its bound gets nil, and its
// request pkt (reqLen bytes, its cookie or ticket already checked) a
// RESET keyed by the request's nonce and no larger than it: the dialer
// fails at once with post.ErrRefused, before either end runs a key
// exchange. The place is held while the connection is pending, queued
// for Accept and accepted, and given back at its teardown.
func (t *Transport) countConn(l *Listener, from *peerAddr, pkt *wire.Packet, reqLen int) func() {
	if uncount := l.conns.Acquire(from.ap.Addr()); uncount != nil {
		return uncount
	}
	t.log.Debug("fsp: connection refused: its source holds its bound", "peer", from, "max", l.conns.Max())
	t.refuseHandshake(from, pkt, reqLen)
	return nil
}

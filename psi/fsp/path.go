package fsp

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Path validation and multihoming.
//
// A connection knows the peer addresses it has heard authenticated
// packets from. The handshake's address is validated (the cookie exchange
// proved the peer receives there). A new address is challenged with a
// KEEP_ALIVE carrying a PATH_CHALLENGE nonce; a PATH_RESPONSE echoing it,
// arriving on any path, validates the address the challenge went to.
// Until then only challenges go there, at most three times the bytes
// received from it (anti-amplification), and data keeps going to the
// validated address. The connection sends on the validated path its
// peer's newest packet came from.

const (
	maxPaths      = 8
	amplification = 3
)

type path struct {
	addr       peerAddr
	validated  bool
	nonce      uint64
	challenged time.Time // last challenge sent; zero if none
	recvBytes  int       // received on the path while unvalidated
	sentBytes  int       // sent to it while unvalidated
	rtt        congestion.RTTStats
	sent, lost uint64 // data packets sent on the path, declared lost
	lastRecv   time.Time
}

// PathInfo describes one path of a connection: a peer address it has
// heard from, and the local address of the socket.
type PathInfo struct {
	Local, Remote net.Addr
	// Validated paths answered a challenge (or the handshake ran on them).
	Validated bool
	// Active is the path data is sent on.
	Active bool
	RTT    time.Duration // smoothed; zero without a sample
	RTTVar time.Duration
	// Sent and Lost count data packets sent on the path and declared
	// lost; Loss is their ratio.
	Sent, Lost uint64
	Loss       float64
}

func (pa peerAddr) netAddr() net.Addr {
	if pa.addr != nil {
		return pa.addr
	}
	return net.UDPAddrFromAddrPort(pa.ap)
}

func samePeer(a, b *peerAddr) bool {
	if a.ap.IsValid() || b.ap.IsValid() {
		return a.ap == b.ap
	}
	return a.addr != nil && b.addr != nil && a.addr.String() == b.addr.String()
}

// initPaths makes the handshake's path the first, validated and active.
func (c *Conn) initPaths(now time.Time) {
	p := &path{addr: c.remote, validated: true, lastRecv: now}
	c.paths = []*path{p}
	c.active, c.latest = p, p
}

// pathFor returns the path of from, adding it if new. Called with c.mu
// held.
func (c *Conn) pathFor(from *peerAddr, now time.Time) *path {
	for _, p := range c.paths {
		if samePeer(&p.addr, from) {
			return p
		}
	}
	if len(c.paths) >= maxPaths {
		// Forget the least recently heard path that is not in use,
		// unvalidated ones first.
		victim := -1
		for i, p := range c.paths {
			if p == c.active || p == c.latest {
				continue
			}
			if victim < 0 || !p.validated && c.paths[victim].validated ||
				p.validated == c.paths[victim].validated && p.lastRecv.Before(c.paths[victim].lastRecv) {
				victim = i
			}
		}
		if victim < 0 {
			return nil
		}
		c.paths = append(c.paths[:victim], c.paths[victim+1:]...)
	}
	var b [8]byte
	rand.Read(b[:])
	p := &path{addr: *from, nonce: binary.BigEndian.Uint64(b[:]) | 1}
	c.paths = append(c.paths, p)
	return p
}

// onPathPacket handles path state for an authenticated packet of n bytes
// from from. newest says whether it carries the highest packet number
// seen. Called with c.mu held.
func (c *Conn) onPathPacket(from *peerAddr, n int, newest bool, pkt *wire.Packet, now time.Time) {
	if c.active == nil {
		c.initPaths(now)
	}
	if pkt.HasChallenge {
		c.respNonce, c.hasResp = pkt.Challenge, true
	}
	if pkt.HasResponse {
		for _, q := range c.paths {
			if !q.validated && q.nonce == pkt.Response && !q.challenged.IsZero() {
				q.validated = true
				q.rtt.Update(now.Sub(q.challenged), 0)
				c.log.Debug("fsp: path validated", "local", c.local, "addr", q.addr)
			}
		}
	}
	p := c.pathFor(from, now)
	if p == nil {
		return
	}
	p.lastRecv = now
	if !p.validated {
		p.recvBytes += n
	}
	if newest {
		c.latest = p
	}
	switch {
	case c.latest.validated && c.latest != c.active:
		c.log.Debug("fsp: peer moved", "from", c.remote, "to", c.latest.addr)
		c.active = c.latest
		c.remote = c.latest.addr
	case !c.latest.validated && (c.latest.challenged.IsZero() || now.Sub(c.latest.challenged) >= c.rto()):
		c.challenge(c.latest, now)
	}
}

// challenge sends a PATH_CHALLENGE to an unvalidated path, within the
// amplification limit. Called with c.mu held.
func (c *Conn) challenge(p *path, now time.Time) {
	size := wire.HeaderLen + 12 + fcrypto.TagLen
	if p.sentBytes+size > amplification*p.recvBytes {
		return
	}
	h := c.header(wire.KeepAlive, 0, c.snd.Next())
	h.HasChallenge, h.Challenge = true, p.nonce
	b := c.seal(&h, nil)
	if b == nil {
		return
	}
	p.sentBytes += len(*b)
	p.challenged = now
	c.t.write(*b, &p.addr)
	putBuf(b)
}

// Paths returns every path the connection knows, the active one first.
func (c *Conn) Paths() []PathInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	local := c.t.Conn.LocalAddr()
	if c.active == nil {
		return []PathInfo{{Local: local, Remote: c.remote.netAddr(), Validated: true, Active: true}}
	}
	out := make([]PathInfo, 0, len(c.paths))
	for _, p := range c.paths {
		pi := PathInfo{Local: local, Remote: p.addr.netAddr(), Validated: p.validated, Active: p == c.active,
			Sent: p.sent, Lost: p.lost}
		if p.rtt.HasSample() {
			pi.RTT, pi.RTTVar = p.rtt.SmoothedRTT(), p.rtt.RTTVar()
		}
		if p.sent > 0 {
			pi.Loss = float64(p.lost) / float64(p.sent)
		}
		if pi.Active {
			out = append([]PathInfo{pi}, out...)
		} else {
			out = append(out, pi)
		}
	}
	return out
}

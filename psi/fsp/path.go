package fsp

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"time"

	"github.com/postsockets/postsockets/psi"
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
//
// An observer that copies the peer's packets and resends them from its
// own, faster address makes its address look like the peer's newest, and
// can get it validated (RFC 9000 §9.3.3). But the peer's own packets
// still arrive from the old address, as duplicates of the copies. So
// when the newest packets come from another address, the active path is
// probed as well (the peer answers from wherever it is), and duplicates
// from a known path are authenticated too: a path heard from after the
// other appeared is still the peer's. The connection then stays on it,
// or, if it already moved, falls back at once, and demotes the other
// path, not moving there again while the old one is heard. A real move
// leaves the old path silent, and the connection follows it.

const (
	maxPaths      = 8
	amplification = 3
	maxProbes     = 3 // probes of a silent path before it is given up
	keptNonces    = 4 // challenges to an unvalidated path a response may answer
)

type path struct {
	addr       peerAddr
	validated  bool
	challenged time.Time // last challenge sent; zero if none
	// The last challenges sent, each with its own nonce, so a response
	// times the one it answers (a resent challenge is not ambiguous).
	nonces     [keptNonces]sentNonce
	nextN      int
	recvBytes  int // received on the path while unvalidated
	sentBytes  int // sent to it while unvalidated
	rtt        congestion.RTTStats
	sent, lost uint64 // data packets sent on the path, declared lost
	lastRecv   time.Time

	// Is the peer still there? (validated paths)
	heard   time.Time // last authenticated packet, duplicates included
	probed  time.Time // last probe sent
	probes  int       // probes sent since last heard
	since   time.Time // when the path last became the peer's newest
	demoted bool      // lost to an active path still heard from

	// Port unreachables with no word from the peer since (icmpRefused).
	refused  time.Time // the first of them
	refusals int
}

type sentNonce struct {
	nonce uint64 // zero if unused
	at    time.Time
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
	// MTU is the largest datagram (UDP payload) the path is known to
	// carry: found by probing on the active path (pmtud.go),
	// BaseDatagramSize on the others.
	MTU int
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
	p := &path{addr: *from}
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
	if pkt.HasChallenge && len(c.resps) < maxPaths {
		c.resps = append(c.resps, pkt.Challenge)
	}
	if pkt.HasResponse && !c.pmtuResponse(pkt.Response) {
		for _, q := range c.paths {
			if q.validated {
				continue
			}
			for _, sn := range q.nonces {
				if sn.nonce == 0 || sn.nonce != pkt.Response {
					continue
				}
				q.validated = true
				q.rtt.Update(now.Sub(sn.at), 0)
				if c.qlog != nil {
					c.qlog.path("fsp:path_validated", nil, q, now.Sub(sn.at))
				}
				c.log.Debug("fsp: path validated", "local", c.local, "addr", q.addr)
				c.emit(psi.EventPathValidated, nil, q, nil)
				break
			}
		}
	}
	if newest {
		c.noteLocal(from.dst)
	}
	p := c.pathFor(from, now)
	if p == nil {
		return
	}
	p.lastRecv = now
	p.heard, p.probes = now, 0
	if !p.validated {
		p.recvBytes += n
	}
	if newest && c.latest != p {
		c.latest = p
		p.since = now
	}
	c.steer(now)
}

// onDuplicate handles a packet rejected as a replay while the peer's
// newest packets come from another path than the active one, or just
// after a move: if it authenticates and comes from a known path, the
// peer (whose packet someone copied) is still there. Called with c.mu
// held.
func (c *Conn) onDuplicate(d *fcrypto.Direction, pn uint64, from *peerAddr, pkt *wire.Packet) {
	if c.active == nil || c.latest == c.active && c.prev == nil {
		return
	}
	var p *path
	for _, q := range c.paths {
		if q.validated && samePeer(&q.addr, from) {
			p = q
		}
	}
	if p == nil {
		return
	}
	buf := getBufFor(len(pkt.Payload))
	_, err := c.open(d, (*buf)[:0], pn, pkt)
	putBuf(buf)
	if err != nil {
		return
	}
	now := time.Now()
	p.heard, p.probes = now, 0
	c.steer(now)
}

// steer chooses the path data goes to. Called with c.mu held.
func (c *Conn) steer(now time.Time) {
	rto := max(c.rto(), minProbeInterval) // path probes keep the old floor
	if p := c.prev; p != nil {
		switch {
		case p == c.active:
			c.prev = nil
		case p.heard.After(c.moved):
			// The peer still sends from the old address: the newest
			// packets from the new one were copies (RFC 9000 §9.3.3).
			c.log.Debug("fsp: old path still heard, moving back", "from", c.active.addr, "to", p.addr)
			c.active.demoted = true
			if c.qlog != nil {
				c.qlog.path("fsp:path_migrated", c.active, p, 0)
			}
			c.emit(psi.EventPathChange, c.active, p, nil)
			c.active, c.remote, c.prev = p, p.addr, nil
			c.pmtuReset("path")
		case now.Sub(p.probed) >= rto:
			if p.probes >= maxProbes {
				c.prev = nil // silent: the move was real
			} else {
				c.probe(p, now)
			}
		}
	}
	l, a := c.latest, c.active
	if l == a {
		return
	}
	if l.demoted {
		// Stay while the active path is heard from; probe it when it
		// falls silent, and give it up after maxProbes.
		if now.Sub(a.heard) < rto || now.Sub(a.probed) < rto {
			return
		}
		if a.probes < maxProbes {
			c.probe(a, now)
			return
		}
		// The active path fell silent through every probe: the peer
		// did move. Follow it now; the test below would still see the
		// active path's last packets as newer than the move and demote
		// the new path again, forever.
		c.emit(psi.EventSoftError, a, nil, errSilentPath)
		l.demoted = false
		if l.validated {
			c.moveTo(a, l, now)
			return
		}
	}
	// The newest packets come from elsewhere: is the peer still on the
	// active path? Packets in flight before it moved may arrive for
	// about half a round trip.
	stillThere := a.heard.After(l.since.Add(c.rtt.SmoothedRTT() / 2))
	if !stillThere && now.Sub(a.probed) >= rto && a.probes < maxProbes {
		c.probe(a, now)
	}
	if !l.validated {
		if l.challenged.IsZero() || now.Sub(l.challenged) >= rto {
			c.challenge(l, now)
		}
		return
	}
	if stillThere {
		l.demoted = true
		return
	}
	c.moveTo(a, l, now)
}

// moveTo makes l the active path in place of a, keeping a to fall back
// to if it is heard from again. Called with c.mu held.
func (c *Conn) moveTo(a, l *path, now time.Time) {
	c.log.Debug("fsp: peer moved", "from", c.remote, "to", l.addr)
	if c.qlog != nil {
		c.qlog.path("fsp:path_migrated", a, l, 0)
	}
	c.emit(psi.EventPathChange, a, l, nil)
	c.prev, c.active, c.remote, c.moved = a, l, l.addr, now
	c.pmtuReset("path") // the new path's MTU is unknown
}

// probe sends a PATH_CHALLENGE to a validated path, so the peer answers
// from wherever it is. Called with c.mu held.
func (c *Conn) probe(p *path, now time.Time) {
	h := c.header(wire.KeepAlive, 0, c.snd.Next())
	var nb [8]byte
	rand.Read(nb[:])
	h.HasChallenge, h.Challenge = true, binary.BigEndian.Uint64(nb[:])|1
	b := c.seal(&h, nil)
	if b == nil {
		return
	}
	p.probed = now
	p.probes++
	c.t.write(*b, &p.addr)
	putBuf(b)
}

// challenge sends a PATH_CHALLENGE to an unvalidated path, within the
// amplification limit. Called with c.mu held.
func (c *Conn) challenge(p *path, now time.Time) {
	size := wire.HeaderLen + 12 + fcrypto.TagLen
	if p.sentBytes+size > amplification*p.recvBytes {
		return
	}
	var nb [8]byte
	rand.Read(nb[:])
	nonce := binary.BigEndian.Uint64(nb[:]) | 1
	h := c.header(wire.KeepAlive, 0, c.snd.Next())
	h.HasChallenge, h.Challenge = true, nonce
	b := c.seal(&h, nil)
	if b == nil {
		return
	}
	p.sentBytes += len(*b)
	p.challenged = now
	p.nonces[p.nextN] = sentNonce{nonce, now}
	p.nextN = (p.nextN + 1) % keptNonces
	c.t.write(*b, &p.addr)
	putBuf(b)
}

// Paths returns every path the connection knows, the active one first.
func (c *Conn) Paths() []PathInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	local := c.t.Conn.LocalAddr()
	if c.active == nil {
		return []PathInfo{{Local: local, Remote: c.remote.netAddr(), Validated: true, Active: true, MTU: c.plpmtu()}}
	}
	out := make([]PathInfo, 0, len(c.paths))
	for _, p := range c.paths {
		pi := PathInfo{Local: local, Remote: p.addr.netAddr(), Validated: p.validated, Active: p == c.active,
			Sent: p.sent, Lost: p.lost, MTU: BaseDatagramSize}
		if p.rtt.HasSample() {
			pi.RTT, pi.RTTVar = p.rtt.SmoothedRTT(), p.rtt.RTTVar()
		}
		if p.sent > 0 {
			pi.Loss = float64(p.lost) / float64(p.sent)
		}
		if pi.Active {
			pi.MTU = c.plpmtu()
			out = append([]PathInfo{pi}, out...)
		} else {
			out = append(out, pi)
		}
	}
	return out
}

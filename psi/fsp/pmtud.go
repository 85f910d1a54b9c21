package fsp

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"syscall"
	"time"

	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Datagram packetization-layer path MTU discovery (RFC 8899).
//
// A connection starts at the base PLPMTU, BaseDatagramSize, which any
// path of 1,280 bytes carries. Once a write filled a packet or needed
// more (wantPMTU), and while it has data to send, it probes the active
// path with a padded KEEP_ALIVE carrying a PATH_CHALLENGE:
// MaxDatagramSize first (an Ethernet path), then the search's ceiling
// (Config.MaxPathMTU: by default 8,972 on a UDP socket, 1,452
// otherwise), then a binary search between the largest size confirmed
// and the smallest that failed. On a UDP socket the kernel refuses a
// probe larger than the local interface's MTU at once (EMSGSIZE), so on
// an Ethernet path the sizes above it cost no wait; a probe above
// MaxDatagramSize lost in the network (or dropped by a peer that takes
// no more) ends the search at MaxDatagramSize. The peer's
// PATH_RESPONSE confirms a probe; pmtuMaxProbes probes of one size lost
// (or refused by the local interface) mark it too big. New data is then
// packetized at the confirmed size. A completed search starts again
// after pmtuRaise.
//
// Black holes (RFC 8899 section 4.3): a probe timeout alone is no
// evidence, since random loss of a tail packet, an outage or a stalled
// host causes it as well. A black hole is suspected once
// pmtuBlackHoleStrikes loss timer expiries in a row found a packet
// larger than the base size unacknowledged, with no such packet
// acknowledged meanwhile. The suspicion is then tested: two KEEP_ALIVEs
// with PATH_CHALLENGEs leave back to back, one padded to the current
// size and one to the base size. An answer to the large one, or an
// acknowledgement of large data, clears the suspicion; the small one
// answered while the large one (sent first) was not is a failed round.
// pmtuConfirmRounds failed rounds in a row confirm the black hole: the
// size drops to the base and the search starts again, with the size it
// fell from as the first probe. Data packetized at the larger size is
// resent in FRAGMENT packets that fit (conn_frag.go). An outage answers
// neither probe, random loss rarely drops the large one twice while the
// small one passes, and a flow of small packets never suspects its path.
//
// Probing works only if the network does not fragment: Transport sets
// IP_PMTUDISC_PROBE on the sockets it can (pmtud_linux.go), so the
// kernel neither fragments nor lowers the size on ICMP messages.

const (
	pmtuMaxProbes = 3                // MAX_PROBES: losses of one size before it is too big
	pmtuStep      = 8                // the search ends when the bounds are this close
	pmtuRaise     = 10 * time.Minute // PMTU_RAISE_TIMER
	// pmtuBlackHoleStrikes is how many loss timer expiries in a row with
	// a large packet unacknowledged make a black hole worth testing, and
	// pmtuConfirmRounds how many failed tests in a row confirm it.
	pmtuBlackHoleStrikes = 3
	pmtuConfirmRounds    = 2
	// minPMTUProbeTimeout bounds the wait for a probe's answer from
	// below: a loaded peer answering late only makes the search stop
	// lower.
	minPMTUProbeTimeout = 50 * time.Millisecond
)

// pmtud is the search state of a connection's active path.
type pmtud struct {
	ceil    int    // the largest size searched for; 0 means MaxDatagramSize
	size    int    // the PLPMTU; 0 means BaseDatagramSize
	tooBig  int    // the smallest size known not to pass; 0 if none
	probe   int    // size of the probe in flight; 0 if none
	nonce   uint64 // the probe's PATH_CHALLENGE
	sentAt  time.Time
	losses  int       // probes of this size lost in a row
	raiseAt time.Time // set when the search completed: search again then
	retry   int       // after a black hole, the size it fell from: probed first
	// lostJumbo: a probe above MaxDatagramSize was lost (not refused by
	// the local interface), so the search ends at MaxDatagramSize.
	lostJumbo bool
	// wanted: a write filled a packet or needed more (wantPMTU). Until
	// then no probe leaves: a connection of small messages (a request
	// and its answer) gains nothing from a larger size, and under load
	// its probes, lost and resent, flooded a listener's socket
	// (docs/benchmarks.md, "What floods the listener").
	wanted bool
	// Black-hole detection: loss timer expiries in a row with a packet
	// above the base size unacknowledged (reset when one is
	// acknowledged); the test round's nonces, large and small (0 once
	// answered or when none is out), when it was sent, and the failed
	// rounds in a row.
	strikes        int
	bhBig, bhSmall uint64
	bhAt           time.Time
	bhFails        int
	// extra is size - BaseDatagramSize, for writers that packetize
	// outside the connection's lock.
	extra      atomic.Int32
	blackHoles uint64
}

// plpmtu returns the largest datagram the active path is known to carry.
// Called with c.mu held.
func (c *Conn) plpmtu() int { return max(c.pmtu.size, BaseDatagramSize) }

// setPLPMTU changes the packetization size for trigger (probe,
// black_hole or path). Called with c.mu held.
func (c *Conn) setPLPMTU(n int, trigger string) {
	if old := c.plpmtu(); old != n && c.qlog != nil {
		c.qlog.mtuUpdated(old, n, trigger)
	}
	c.pmtu.size = n
	c.pmtu.extra.Store(int32(n - BaseDatagramSize))
}

// pmtuAhead is how many packets a writer may packetize beyond those sent
// while the search may still raise the size. Data is packetized when it
// is written, so without a bound a bulk writer fills its whole send
// buffer (8 MiB by default) at the base size before the first probe is
// answered, and sends all of it at that size.
const pmtuAhead = 64

// pmtuHold reports whether a writer should wait before packetizing more:
// the search has not finished below MaxDatagramSize (or its ceiling, if
// lower), and pmtuAhead packets already wait to be sent. Sizes above
// MaxDatagramSize save CPU but are worth no wait: on a path whose
// interface takes jumbo datagrams but whose links do not, their probes
// are lost one by one. Called with c.mu held.
func (c *Conn) pmtuHold() bool {
	return !c.cfg.DisablePathMTUDiscovery && c.pmtu.wanted && c.pmtu.raiseAt.IsZero() &&
		c.plpmtu() < min(MaxDatagramSize, c.pmtu.max()) && c.snd.Unsent() >= pmtuAhead
}

// pmtuWake wakes a writer held by pmtuHold once it may go on: packets
// were sent, or the search completed. Neither is an acknowledgement, the
// writer's usual wake-up, and against a silent peer none comes. Called
// with c.mu held.
func (c *Conn) pmtuWake() {
	if c.pmtuWait && !c.pmtuHold() {
		c.pmtuWait = false
		signal(c.writable)
	}
}

// writePayload is how many message bytes a new data packet takes.
func (c *Conn) writePayload() int { return c.maxPayload + int(c.pmtu.extra.Load()) }

// PathMTU returns the largest datagram (UDP payload) the active path is
// known to carry: BaseDatagramSize until probing confirms more.
func (c *Conn) PathMTU() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plpmtu()
}

// dataRoom is the payload a data packet with header p may carry at the
// current size. Called with c.mu held.
func (c *Conn) dataRoom(p *wire.Packet) int {
	n := c.plpmtu() - wire.HeaderLen - fcrypto.TagLen
	if p.HasSkip {
		n -= wire.SkipLen
	}
	return n
}

// max is the largest size the search looks for.
func (pm *pmtud) max() int {
	if pm.ceil > 0 {
		return pm.ceil
	}
	return MaxDatagramSize
}

// next returns the size to probe, or 0 once the search is complete.
func (pm *pmtud) next() int {
	if r := pm.retry; r > 0 {
		// A false alarm is over in one round trip.
		pm.retry = 0
		return r
	}
	top := pm.max()
	lo, hi := max(pm.size, BaseDatagramSize), top+1
	if pm.tooBig > 0 {
		hi = pm.tooBig
	}
	switch {
	case hi-lo <= pmtuStep:
		return 0
	case lo < MaxDatagramSize && MaxDatagramSize < hi:
		// The common case, an Ethernet path, first: writers wait for
		// it (pmtuHold), and a peer or a link that takes no more loses
		// a larger probe only after three probe timeouts.
		return MaxDatagramSize
	case pm.tooBig == 0:
		return top // the path may take the most
	case pm.lostJumbo && lo >= MaxDatagramSize:
		// A peer that takes no more (a listener's default) or a path
		// narrower than the local interface: each step of a search
		// above would cost three probe timeouts, for little.
		return 0
	}
	return (lo + hi) / 2
}

func (c *Conn) pmtuProbeTimeout() time.Duration {
	return max(2*c.rtt.PTO(), minPMTUProbeTimeout)
}

// wantPMTU notes a write of n bytes: one that fills a packet at the
// current size or needs more starts the search, as quic-go starts its
// own only once there is data to carry (its probes are paced instead).
// Called with c.mu held.
func (c *Conn) wantPMTU(n int) {
	if n >= c.writePayload() {
		c.pmtu.wanted = true
	}
}

// pmtuTick runs the search: it counts a probe unanswered in time as lost
// and sends the next one. It probes only once a write did not fit one
// packet (wantPMTU), and while the connection has data to send. Called
// by fill with c.mu held.
func (c *Conn) pmtuTick(now time.Time) {
	pm := &c.pmtu
	if !pm.wanted || c.active == nil || !c.peerKnown || c.state != stateEstablished || c.cfg.DisablePathMTUDiscovery {
		return
	}
	if c.snd.BytesInFlight() == 0 && !c.snd.HasPending() {
		return // idle: a probe in flight is counted lost (and resent) once data flows again
	}
	if pm.probe != 0 {
		if now.Sub(pm.sentAt) < c.pmtuProbeTimeout() {
			return
		}
		pm.losses++
		if pm.losses >= pmtuMaxProbes {
			c.log.Debug("fsp: path MTU probe lost", "size", pm.probe, "local", c.local)
			pm.tooBig, pm.probe, pm.losses = pm.probe, 0, 0
			pm.lostJumbo = pm.tooBig > MaxDatagramSize
		}
	}
	if !pm.raiseAt.IsZero() {
		if now.Before(pm.raiseAt) {
			return
		}
		pm.raiseAt, pm.tooBig, pm.lostJumbo = time.Time{}, 0, false
	}
	for {
		size := pm.probe // a lost probe's size again
		if size == 0 {
			if size = pm.next(); size == 0 {
				pm.raiseAt = now.Add(pmtuRaise)
				c.log.Debug("fsp: path MTU search complete", "size", c.plpmtu(), "local", c.local)
				return
			}
			pm.nonce = pmtuNonce()
		}
		err := c.sendPMTUProbe(size, pm.nonce)
		pm.probe, pm.sentAt = size, now
		if !errors.Is(err, syscall.EMSGSIZE) {
			return
		}
		// The local interface refuses it: too big, no need to wait.
		pm.tooBig, pm.probe, pm.losses = size, 0, 0
	}
}

// sendPMTUProbe sends a KEEP_ALIVE with PATH_CHALLENGE nonce, padded to
// size bytes. Called with c.mu held.
func (c *Conn) sendPMTUProbe(size int, nonce uint64) error {
	h := c.header(wire.KeepAlive, 0, c.snd.Next())
	h.HasChallenge, h.Challenge = true, nonce
	pad := size - len(wire.AppendHeader(make([]byte, 0, 64), &h)) - fcrypto.TagLen
	buf := getBufFor(size)
	defer putBuf(buf)
	payload := (*buf)[:max(pad, 0)]
	clear(payload)
	b := c.seal(&h, payload)
	if b == nil {
		return nil
	}
	defer putBuf(b)
	return c.t.write(*b, &c.active.addr)
}

// inheritPMTU starts clone cl at its parent's path MTU and search state:
// they share the path, so a completed search is not run again per
// clone. Called with c.mu held.
func (cl *Conn) inheritPMTU(c *Conn) {
	cl.setPLPMTU(c.plpmtu(), "path")
	cl.pmtu.tooBig, cl.pmtu.raiseAt = c.pmtu.tooBig, c.pmtu.raiseAt
}

// pmtuResponse takes a PATH_RESPONSE: if it answers the search's probe
// in flight, its size becomes the PLPMTU; if it answers the black-hole
// confirmation while large packets still go unacknowledged, the size
// falls back to the base. Called with c.mu held.
func (c *Conn) pmtuResponse(nonce uint64) bool {
	pm := &c.pmtu
	switch {
	case pm.bhBig != 0 && nonce == pm.bhBig:
		// The current size gets through: no black hole.
		pm.bhBig, pm.strikes, pm.bhFails = 0, 0, 0
		return true
	case pm.bhSmall != 0 && nonce == pm.bhSmall:
		pm.bhSmall = 0
		if pm.bhBig != 0 && pm.strikes >= pmtuBlackHoleStrikes {
			// The small probe passed, the large one sent before it did not.
			if pm.bhFails++; pm.bhFails >= pmtuConfirmRounds {
				c.pmtuFallBack()
			} else {
				c.pmtuTestRound(time.Now())
			}
		}
		return true
	}
	if pm.probe == 0 || nonce != pm.nonce {
		return false
	}
	if pm.probe > c.plpmtu() {
		c.setPLPMTU(pm.probe, "probe")
		signal(c.writable) // a writer held by pmtuHold packetizes at the new size
		c.log.Debug("fsp: path MTU raised", "size", pm.probe, "local", c.local)
	}
	pm.probe, pm.losses = 0, 0
	return true
}

// isBig reports whether a data packet of payload n, sent at the current
// size, is a datagram larger than the base size. Called with c.mu held.
func (c *Conn) isBig(n int) bool {
	return min(n, c.plpmtu()-overhead)+overhead > BaseDatagramSize
}

// pmtuAcked notes an acknowledged packet: a large one shows the path
// carries the current size, and clears the suspicion. Called with c.mu
// held.
func (c *Conn) pmtuAcked(big bool) {
	if big {
		c.pmtu.strikes, c.pmtu.bhFails = 0, 0
	}
}

// pmtuSuspect is the black-hole detector, called when the loss timer
// expires with data in flight: above the base size, with a large packet
// unacknowledged, it counts a strike (a timer that finds only small
// packets unacknowledged clears them), and from pmtuBlackHoleStrikes on
// tests the path (pmtuTestRound), again if the last round went
// unanswered for a probe timeout. Called with c.mu held.
func (c *Conn) pmtuSuspect(now time.Time) {
	pm := &c.pmtu
	if c.plpmtu() <= BaseDatagramSize || c.active == nil || !c.peerKnown || c.state != stateEstablished || c.cfg.DisablePathMTUDiscovery {
		return
	}
	if !c.bigInFlight() {
		pm.strikes, pm.bhFails = 0, 0
		return
	}
	pm.strikes++
	if pm.strikes < pmtuBlackHoleStrikes || pm.bhSmall != 0 && now.Sub(pm.bhAt) < c.pmtuProbeTimeout() {
		return
	}
	c.pmtuTestRound(now)
}

// pmtuTestRound sends a probe at the current size and then one at the
// base size, each with its own PATH_CHALLENGE. Called with c.mu held.
func (c *Conn) pmtuTestRound(now time.Time) {
	pm := &c.pmtu
	pm.bhBig, pm.bhSmall, pm.bhAt = pmtuNonce(), pmtuNonce(), now
	if err := c.sendPMTUProbe(c.plpmtu(), pm.bhBig); errors.Is(err, syscall.EMSGSIZE) {
		c.pmtuFallBack() // the local interface refuses it
		return
	}
	c.sendPMTUProbe(BaseDatagramSize, pm.bhSmall)
}

func pmtuNonce() uint64 {
	var nb [8]byte
	rand.Read(nb[:])
	return binary.BigEndian.Uint64(nb[:]) | 1
}

// bigInFlight reports whether the oldest or the newest packet in flight
// was sent larger than the base size. Called with c.mu held.
func (c *Conn) bigInFlight() bool {
	for _, e := range [2]*reliability.Entry[txData]{c.snd.OldestSent(), c.snd.NewestSent()} {
		if e != nil && e.InFlight && e.Value.big {
			return true
		}
	}
	return false
}

// pmtuFallBack drops the size to the base on a confirmed black hole and
// restarts the search, the size it fell from first. Called with c.mu
// held.
func (c *Conn) pmtuFallBack() {
	if c.plpmtu() <= BaseDatagramSize {
		return
	}
	c.log.Debug("fsp: path MTU black hole, back to the base size", "size", c.plpmtu(), "local", c.local)
	c.pmtu.blackHoles++
	old := c.plpmtu()
	c.pmtuReset("black_hole")
	c.pmtu.retry = old
}

// pmtuReset starts over at the base size, on a black hole or a new
// path (trigger). Called with c.mu held.
func (c *Conn) pmtuReset(trigger string) {
	pm := &c.pmtu
	c.setPLPMTU(BaseDatagramSize, trigger)
	pm.tooBig, pm.probe, pm.losses, pm.raiseAt, pm.lostJumbo = 0, 0, 0, time.Time{}, false
	pm.strikes, pm.bhBig, pm.bhSmall, pm.bhFails = 0, 0, 0, 0
}

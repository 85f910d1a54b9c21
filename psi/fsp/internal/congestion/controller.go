package congestion

import (
	"fmt"
	"time"

	"github.com/postsockets/postsockets/post"
)

// Controller decides how many bytes may be in flight on a path.
//
// Packet numbers given to the methods must increase monotonically in send
// order. A loss or timeout opens a recovery epoch that covers every packet
// sent so far; further losses of those packets do not reduce the window
// again, and the epoch ends when a packet sent after it began is
// acknowledged.
type Controller interface {
	// OnPacketSent records that packet pn of the given size was sent;
	// bytesInFlight includes it.
	OnPacketSent(now time.Time, pn uint64, bytes int, bytesInFlight int)
	// OnAck records that packet pn was acknowledged. priorInFlight is the
	// number of bytes in flight before the acknowledgement that carried it
	// was processed, the same for every packet one acknowledgement covers;
	// the window grows only when the sender was limited by it. rtt must
	// already include the sample this acknowledgement gave; it may be nil,
	// and InitialRTT is then assumed.
	OnAck(now time.Time, pn uint64, ackedBytes int, priorInFlight int, rtt *RTTStats)
	// OnLoss records that packet pn of lostBytes was declared lost.
	// priorInFlight is the number of bytes in flight before the
	// acknowledgement (or timer) that declared it; zero if unknown. A new
	// congestion event reduces the window the sender was using: the
	// larger of priorInFlight and the most in flight since the last
	// reduction, at most the window (RFC 9438 section 4.6 and RFC 5681
	// reduce from the flight size). A loss weighs as its size: packets
	// smaller than the MSS start an event once their lost bytes add up
	// to one MSS (lostBytes <= 0 weighs as a full packet).
	OnLoss(now time.Time, pn uint64, lostBytes int, priorInFlight int)
	// OnRetransmissionTimeout records that the RTO fired: the window
	// collapses to the minimum and slow start begins again.
	OnRetransmissionTimeout()
	// CanSend reports whether another packet may be sent with
	// bytesInFlight already outstanding.
	CanSend(bytesInFlight int) bool
	// Window returns the congestion window in bytes.
	Window() int
	// InRecovery reports whether a recovery epoch is open.
	InRecovery() bool
	// PacingRate returns the rate in bytes per second at which to pace
	// packets: 2*Window/SmoothedRTT in slow start, 1.25*Window/SmoothedRTT
	// otherwise (and in HyStart++'s Conservative Slow Start). rtt may be
	// nil.
	PacingRate(rtt *RTTStats) float64
}

// Undoer is implemented by a Controller that can take back a
// retransmission timeout found spurious: a packet it presumed lost was
// acknowledged without having been sent again, so the path only stalled
// (a host that stopped scheduling, a delay spike), and the window the
// timeout collapsed goes back to what it was (as RFC 4015's Eifel
// response restores it). UndoTimeout reports whether it did: not if a
// congestion event came after the timeout, nor twice.
type Undoer interface {
	UndoTimeout() bool
}

// Config configures a Controller. The zero value gives the defaults.
type Config struct {
	// MSS is the largest packet payload, in bytes; default 1400.
	MSS int
	// InitialWindowPackets is the initial window in packets; default 32,
	// as in quic-go.
	InitialWindowPackets int
	// MaxWindow caps the window in bytes; default 16 MiB.
	MaxWindow int
}

// Defaults.
const (
	DefaultMSS                  = 1400
	DefaultInitialWindowPackets = 32
	DefaultMaxWindow            = 16 << 20
	// MinWindowPackets is the smallest window, in packets, that a loss or
	// timeout leaves (RFC 9002 kMinimumWindow).
	MinWindowPackets = 2
)

func (c Config) withDefaults() Config {
	if c.MSS <= 0 {
		c.MSS = DefaultMSS
	}
	if c.InitialWindowPackets <= 0 {
		c.InitialWindowPackets = DefaultInitialWindowPackets
	}
	if c.MaxWindow <= 0 {
		c.MaxWindow = DefaultMaxWindow
	}
	c.MaxWindow = max(c.MaxWindow, MinWindowPackets*c.MSS)
	return c
}

// New returns the controller with the given name: "cubic" (also the empty
// name) or "newreno" (also "reno"). Other names give an error wrapping
// post.ErrNotSupported.
func New(name string, cfg Config) (Controller, error) {
	switch name {
	case "", "cubic":
		return NewCubic(cfg), nil
	case "newreno", "reno":
		return NewReno(cfg), nil
	}
	return nil, fmt.Errorf("congestion: controller %q: %w", name, post.ErrNotSupported)
}

// window is the state NewReno and CUBIC share: the window, slow start
// threshold and recovery epoch.
type window struct {
	mss       int
	maxWindow int
	minWindow int
	cwnd      int
	ssthresh  int

	largestSent uint64
	sentAny     bool
	// Packets numbered up to recoveryEnd were sent before the last window
	// reduction; their losses do not reduce the window again.
	recoveryEnd   uint64
	recoveryValid bool
	inRecovery    bool
	// lostBytes adds up the losses of packets sent after the last
	// reduction until they weigh one MSS (beginEpoch).
	lostBytes int
	// undoable: a timeout collapsed the window and no congestion event
	// followed; UndoTimeout may restore what it saved.
	undoable bool
	// rtoPending is set by a timeout and cleared by an acknowledgement of a
	// packet sent after it, so back-to-back timeouts lower ssthresh once.
	rtoPending bool
	// maxFlight is the most bytes in flight reported by OnPacketSent
	// since the last reduction.
	maxFlight int
	// Round trips for cwndLimited, counted in packets: roundEnd is the
	// largest packet sent when the current round began; filled records
	// whether a packet sent in it filled the window, wasFilled the same
	// for the round before.
	roundEnd          uint64
	filled, wasFilled bool
	// For queueEmpty: the path's minimum round trip, and the least sample
	// of this round trip and of the one before (0: none yet).
	minRTT, roundMin, prevRoundMin time.Duration
	// hs ends the first slow start when the round trip rises.
	hs hystart
}

// Queue-aware reduction (after TCP Veno, Fu and Liew, IEEE JSAC 2003). A
// loss while the path's queue holds fewer than randomLossBacklog packets
// of the flow's is taken for a random one (a radio, a flaky link), not
// for congestion: the window is reduced by the gentler randomLossBeta,
// once per recovery epoch as any reduction. A loss at a full queue (a
// tail drop, as when sharing a bottleneck) gets the full reduction, so
// the rule changes nothing among flows that fill a queue, while a flow
// losing 1% of its packets at random no longer runs far below the path.
const (
	randomLossBacklog = 3    // packets queued, as Veno's beta
	randomLossBeta    = 0.85 // the window kept
)

// noteRTT records the latest sample for queueEmpty; rtt may be nil.
func (w *window) noteRTT(rtt *RTTStats) {
	if rtt == nil || !rtt.HasSample() {
		return
	}
	w.minRTT = rtt.MinRTT()
	if l := rtt.LatestRTT(); w.roundMin == 0 || l < w.roundMin {
		w.roundMin = l
	}
}

// queueEmpty reports whether the flow's packets queued on the path are
// fewer than randomLossBacklog: the loss being reduced for is likely not
// a queue's. The queue is the window times the share of the round trip
// spent above its minimum, by the least sample of this round trip (the
// last one's until this one has any): a standing queue delays every
// packet, while a host's or link's jitter (the smoothed estimate follows
// it) delays only some. The round before does not count: a queue that
// drained then may be full again now (a competing flow's burst).
//
// In slow start it is false: the queue a round trip's doubling builds
// shows in that round trip's samples only, too late for them.
func (w *window) queueEmpty() bool {
	if w.inSlowStart() {
		return false
	}
	rtt := w.roundMin
	if rtt == 0 {
		rtt = w.prevRoundMin // the round trip just began
	}
	if w.minRTT <= 0 || rtt <= 0 {
		return false
	}
	if rtt <= w.minRTT {
		return true
	}
	queued := float64(w.cwnd) * float64(rtt-w.minRTT) / float64(rtt)
	return queued < randomLossBacklog*float64(w.mss)
}

func newWindow(cfg Config) window {
	cfg = cfg.withDefaults()
	return window{
		mss:       cfg.MSS,
		maxWindow: cfg.MaxWindow,
		minWindow: MinWindowPackets * cfg.MSS,
		cwnd:      min(cfg.InitialWindowPackets*cfg.MSS, cfg.MaxWindow),
		ssthresh:  cfg.MaxWindow,
	}
}

func (w *window) OnPacketSent(_ time.Time, pn uint64, _ int, bytesInFlight int) {
	w.noteSent(pn)
	w.maxFlight = max(w.maxFlight, bytesInFlight)
	if w.fills(bytesInFlight) {
		w.filled = true
	}
}

// used returns the window the sender was using when a congestion event
// began: the window, or less when flow control or the application kept
// the flight well below it. Reducing an unused window would not slow the
// sender down: a flow held back by its peer's receive window would keep
// its rate through every loss and crowd out the flows that do back off.
// Linux reaches the same end by decaying an unused window (RFC 2861);
// RFC 9438 section 4.6 asks that a window that is not in use not set
// the next one. It also restarts the count for the next event.
func (w *window) used(priorInFlight int) int {
	f := max(w.maxFlight, priorInFlight)
	w.maxFlight = 0
	if f <= 0 || f+3*w.mss >= w.cwnd { // the slack cwndLimited allows
		return w.cwnd
	}
	return max(f, w.minWindow)
}

func (w *window) noteSent(pn uint64) {
	if !w.sentAny || pn > w.largestSent {
		w.largestSent = pn
		w.sentAny = true
	}
}

func (w *window) CanSend(bytesInFlight int) bool { return bytesInFlight < w.cwnd }
func (w *window) Window() int                    { return w.cwnd }
func (w *window) InRecovery() bool               { return w.inRecovery }
func (w *window) inSlowStart() bool              { return w.cwnd < w.ssthresh }

// hystartOn reports whether HyStart++ runs: in the first slow start,
// before anything set ssthresh.
func (w *window) hystartOn() bool { return w.inSlowStart() && w.ssthresh >= w.maxWindow }

// slowStartGrowth returns what acked bytes add to the window in slow
// start: less in HyStart++'s CSS.
func (w *window) slowStartGrowth(acked int) float64 {
	if w.hystartOn() {
		return w.hs.growth(acked)
	}
	return float64(acked)
}

func (w *window) PacingRate(rtt *RTTStats) float64 {
	srtt := InitialRTT
	if rtt != nil {
		srtt = rtt.SmoothedRTT()
	}
	srtt = max(srtt, time.Microsecond)
	gain := 1.25
	if w.inSlowStart() && !w.hs.css {
		gain = 2 // CSS grows the window by a quarter a round at most
	}
	return gain * float64(w.cwnd) / srtt.Seconds()
}

// beginEpoch reports whether losing packet pn of the given size starts a
// new congestion event, and if so opens a recovery epoch covering all
// packets sent so far.
//
// A loss weighs as its size in bytes (RFC 7141 section 2.3: the strength
// of a congestion indication is proportionate to the size of the lost
// packet): a lost full-size packet is an event, smaller ones are once
// their bytes lost since the last reduction add up to one MSS. A flow of
// small packets meets a per-packet loss rate once per packet, not per
// MSS of data; counting each such loss as an event cut its window about
// MSS/size times as often as a bulk flow's at the same loss rate. Eight
// FSP clones sending a 200-byte message every 5 ms each over 20 ms and
// 2% random loss were held to 4-8 KB, below the 8.6 KB they keep in
// flight, and fell seconds behind (docs/benchmarks-hol.md). QUIC copes
// by packing its streams' queued frames into full packets once the
// window holds them back; an FSP packet carries one clone's data only.
// A burst of small losses, as at an overflowing queue, still adds up to
// an event within the round trip.
func (w *window) beginEpoch(pn uint64, lostBytes int) bool {
	if w.recoveryValid && pn <= w.recoveryEnd {
		return false
	}
	w.noteSent(pn)
	if lostBytes <= 0 || lostBytes > w.mss {
		lostBytes = w.mss
	}
	if w.lostBytes += lostBytes; w.lostBytes < w.mss {
		return false
	}
	w.lostBytes = 0
	w.recoveryValid = true
	w.recoveryEnd = w.largestSent
	w.inRecovery = true
	w.undoable = false
	w.hs.end()
	return true
}

// onAck ends the recovery epoch when pn was sent after it began, gives
// HyStart++ the round and the sample, and reports whether the window may
// grow.
func (w *window) onAck(pn uint64, ackedBytes, priorInFlight int, rtt *RTTStats) bool {
	if w.recoveryValid && pn > w.recoveryEnd {
		w.inRecovery = false
		w.rtoPending = false
	}
	if pn > w.roundEnd { // a round trip ended
		w.wasFilled, w.filled = w.filled, false
		w.prevRoundMin, w.roundMin = w.roundMin, 0
		w.roundEnd = w.largestSent
		if w.hs.newRound() && w.hystartOn() {
			w.ssthresh = w.cwnd // CSS is over: congestion avoidance
			w.hs.end()
		}
	}
	if w.hystartOn() {
		w.hs.sample(rtt)
	}
	if w.inRecovery || ackedBytes <= 0 {
		return false
	}
	return w.cwndLimited(priorInFlight)
}

// cwndLimited reports whether the sender was using its window, so that an
// acknowledgement is evidence the network could carry more (RFC 9002
// section 7.8): the flight before the acknowledgement filled it, or a
// packet sent in this round trip or the one before did. A paced sender's
// flight dips below the window between acknowledgements; it is limited
// by the window, not by the application, if the window fills once a
// round (Linux keeps the same per-round flag).
func (w *window) cwndLimited(priorInFlight int) bool {
	return w.fills(priorInFlight) || w.filled || w.wasFilled
}

// fills reports whether bytesInFlight uses the window: in slow start
// half of it, as Linux counts; otherwise all but a few packets of slack.
func (w *window) fills(bytesInFlight int) bool {
	if w.inSlowStart() {
		return 2*bytesInFlight >= w.cwnd
	}
	return bytesInFlight+3*w.mss >= w.cwnd
}

// timeout opens an epoch for a retransmission timeout and reports whether
// it is the first of a run of back-to-back timeouts.
func (w *window) timeout() bool {
	first := !w.rtoPending
	w.rtoPending = true
	w.hs.end()
	w.lostBytes = 0
	w.recoveryValid = true
	w.recoveryEnd = w.largestSent
	w.inRecovery = false
	return first
}

func (w *window) clamp(v int) int { return min(max(v, w.minWindow), w.maxWindow) }

// reno is NewReno congestion control (RFC 6582, RFC 9002 section 7).
type reno struct {
	window
	acked int // bytes acknowledged towards the next increase in avoidance
	// ssAcked is the fraction of a byte slow start owes the window (CSS
	// adds a quarter of what is acknowledged)
	ssAcked float64
	// the window and threshold before the first of a run of timeouts
	undoCwnd, undoSsthresh int
}

// NewReno returns a NewReno controller: slow start doubling the window per
// round trip, congestion avoidance adding one MSS per window acknowledged,
// and halving on loss once per recovery epoch (keeping 0.8 of it for a
// loss with the queue empty: see randomLossBacklog).
func NewReno(cfg Config) Controller {
	return &reno{window: newWindow(cfg)}
}

func (r *reno) OnAck(_ time.Time, pn uint64, ackedBytes int, priorInFlight int, rtt *RTTStats) {
	r.noteRTT(rtt)
	if !r.onAck(pn, ackedBytes, priorInFlight, rtt) {
		return
	}
	if r.inSlowStart() {
		r.ssAcked += r.slowStartGrowth(ackedBytes)
		n := int(r.ssAcked)
		r.ssAcked -= float64(n)
		r.cwnd = min(r.cwnd+n, r.maxWindow)
		return
	}
	r.acked += ackedBytes
	if r.acked >= r.cwnd {
		r.acked -= r.cwnd
		r.cwnd = min(r.cwnd+r.mss, r.maxWindow)
	}
}

func (r *reno) OnLoss(_ time.Time, pn uint64, lostBytes int, priorInFlight int) {
	if !r.beginEpoch(pn, lostBytes) {
		return
	}
	beta := 0.5
	if r.queueEmpty() {
		beta = 0.8 // Veno's
	}
	r.cwnd = r.clamp(int(float64(r.used(priorInFlight)) * beta))
	r.ssthresh = r.cwnd
	r.acked = 0
}

func (r *reno) OnRetransmissionTimeout() {
	if r.timeout() {
		r.undoCwnd, r.undoSsthresh, r.undoable = r.cwnd, r.ssthresh, true
		r.ssthresh = r.clamp(r.used(0) / 2)
	}
	r.cwnd = r.minWindow
	r.acked = 0
}

func (r *reno) UndoTimeout() bool {
	if !r.undoable {
		return false
	}
	r.cwnd, r.ssthresh, r.acked = r.undoCwnd, r.undoSsthresh, 0
	r.undone()
	return true
}

// undone ends the timeout state after an undo.
func (w *window) undone() {
	w.undoable, w.rtoPending, w.inRecovery = false, false, false
}

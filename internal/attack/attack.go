// Package attack runs denial-of-service attacks against real listeners on
// loopback while a legitimate client keeps dialling, and measures what the
// attack costs that client and the server: dial success rate and p99
// connect time against no attack, server memory before, during and after,
// and the bytes the attacker got back per byte it sent before proving its
// address.
//
// The attackers live here and in the files beside this one; the cases that
// aim them at each stack are in package cases, and the FSP cases that
// forge packets are tests in psi/fsp (its wire format is internal to it).
package attack

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Dials is what the legitimate client saw.
type Dials struct {
	N, OK int
	lat   []time.Duration // of the successful dials
	Errs  map[string]int  // error text -> count
}

// Rate is the share of dials that succeeded, 1 with no dials.
func (d *Dials) Rate() float64 {
	if d.N == 0 {
		return 1
	}
	return float64(d.OK) / float64(d.N)
}

// P99 is the 99th percentile connect time of the successful dials.
func (d *Dials) P99() time.Duration {
	if len(d.lat) == 0 {
		return 0
	}
	l := slices.Clone(d.lat)
	slices.Sort(l)
	return l[min(len(l)-1, len(l)*99/100)]
}

func (d *Dials) String() string {
	return fmt.Sprintf("%d/%d (%.1f%%), p99 %v", d.OK, d.N, 100*d.Rate(), d.P99().Round(100*time.Microsecond))
}

// Legit calls dial rate times a second until ctx ends, each call bounded by
// timeout and not by ctx, and waits for the calls in flight. With inFlight
// above zero, a tick that finds that many calls unfinished starts none.
func Legit(ctx context.Context, rate float64, timeout time.Duration, inFlight int, dial func(context.Context) error) *Dials {
	d := &Dials{Errs: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	var busy chan struct{} // a token per call in flight, with a bound
	if inFlight > 0 {
		busy = make(chan struct{}, inFlight)
	}
	one := func() {
		defer wg.Done()
		if busy != nil {
			defer func() { <-busy }()
		}
		dctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		err := dial(dctx)
		el := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		d.N++
		if err != nil {
			d.Errs[err.Error()]++
			return
		}
		d.OK++
		d.lat = append(d.lat, el)
	}
	for {
		start := true
		if busy != nil {
			select {
			case busy <- struct{}{}:
			default:
				start = false
			}
		}
		if start {
			wg.Add(1)
			go one()
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			wg.Wait()
			return d
		}
	}
}

// Mem is the process's live heap, in bytes: after collections (see
// LiveHeap) before the attack, the largest seen during it, and after
// collections once the attack stopped and the server had Settle to
// clean up.
type Mem struct{ Before, Peak, After uint64 }

func (m Mem) String() string {
	return fmt.Sprintf("%s / %s / %s", MiB(m.Before), MiB(m.Peak), MiB(m.After))
}

// MiB formats n bytes.
func MiB(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// LiveHeap returns the live heap after two collections. One is not
// enough: a sync.Pool keeps what was put in it through one collection
// (its victim cache), so after an attack that released many pooled
// buffers a single collection still counted them all (97.8 MiB after
// FSPUnaccepted where the second found 13 MiB).
func LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// sampleHeap records the largest live heap (as of each collection, and
// the heap in use, whichever is less) until stop is closed.
func sampleHeap(stop <-chan struct{}, peak *atomic.Uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(s)
		v := min(s[0].Value.Uint64(), s[1].Value.Uint64())
		if v > peak.Load() {
			peak.Store(v)
		}
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// Bytes counts what an attacker sent before proving its address and what
// came back, to bound amplification.
type Bytes struct {
	sent, recv         atomic.Int64
	minPacket, maxRepl atomic.Int64
}

// Sent records one packet of n bytes sent.
func (b *Bytes) Sent(n int) {
	b.sent.Add(int64(n))
	for {
		m := b.minPacket.Load()
		if m != 0 && m <= int64(n) || b.minPacket.CompareAndSwap(m, int64(n)) {
			return
		}
	}
}

// Totals returns the bytes sent and received so far.
func (b *Bytes) Totals() (sent, recv int64) { return b.sent.Load(), b.recv.Load() }

// Largest returns the largest reply received so far.
func (b *Bytes) Largest() int64 { return b.maxRepl.Load() }

// Recv records one reply of n bytes received.
func (b *Bytes) Recv(n int) {
	b.recv.Add(int64(n))
	for {
		m := b.maxRepl.Load()
		if m >= int64(n) || b.maxRepl.CompareAndSwap(m, int64(n)) {
			return
		}
	}
}

// Case is one attack on one listener.
type Case struct {
	Name string
	// Budget bounds the growth of the live heap during the attack.
	Budget uint64
	// Dial is one legitimate connection attempt; it must clean up after
	// itself.
	Dial func(ctx context.Context) error
	// Attack runs until ctx ends and releases what it holds before it
	// returns. It counts its unauthenticated traffic in b, if it has any.
	Attack func(ctx context.Context, b *Bytes)
	// Settle is how long the server gets after the attack before the
	// memory is measured again; zero means 200 ms.
	Settle time.Duration
	// Check, if set, is called after the attack for case-specific
	// figures; its text goes into the Result's Note, an error fails it.
	Check func() (string, error)
}

// Result is what one run of a Case measured.
type Result struct {
	Name          string
	Base, Attack  *Dials
	Mem           Mem
	Budget        uint64
	Sent, Recv    int64 // unauthenticated bytes to and from the attacker
	MinPacket     int64 // smallest packet the attacker sent
	MaxReply      int64 // largest reply it got
	Note          string
	CheckErr      error
	Duration      time.Duration
	AttackStarted time.Time
}

// Amplification is the bytes returned per byte received.
func (r *Result) Amplification() float64 {
	if r.Sent == 0 {
		return 0
	}
	return float64(r.Recv) / float64(r.Sent)
}

// Options set how long and how hard a Case runs.
type Options struct {
	Duration time.Duration // the attack; zero means 3 s
	Warmup   time.Duration // attack alone before the client dials; zero means Duration/4
	Baseline time.Duration // client alone; zero means 1 s
	Rate     float64       // client dials a second; zero means 10
	Timeout  time.Duration // per dial; zero means 3 s
	// InFlight bounds the client's dials in flight (a tick finding
	// that many skips its dial); zero means none. A client whose
	// listener serves sources in turn gets a share of its handshake
	// rate, not a rate of its own: past its share, an unbounded client
	// queues behind its own dials.
	InFlight int
}

func (o *Options) fill() {
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = o.Duration / 4
	}
	if o.Baseline <= 0 {
		o.Baseline = time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 10
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
}

// Run measures the client alone, then runs the attack for o.Duration with
// the client dialling after o.Warmup.
func Run(c Case, o Options) *Result {
	o.fill()
	r := &Result{Name: c.Name, Budget: c.Budget}
	bctx, cancel := context.WithTimeout(context.Background(), o.Baseline)
	r.Base = Legit(bctx, o.Rate, o.Timeout, o.InFlight, c.Dial)
	cancel()

	r.Mem.Before = LiveHeap()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { sampleHeap(stop, &peak); close(sampled) }()

	var b Bytes
	actx, acancel := context.WithTimeout(context.Background(), o.Duration)
	defer acancel()
	attacked := make(chan struct{})
	r.AttackStarted = time.Now()
	go func() { c.Attack(actx, &b); close(attacked) }()
	select {
	case <-time.After(o.Warmup):
	case <-actx.Done():
	}
	r.Attack = Legit(actx, o.Rate, o.Timeout, o.InFlight, c.Dial)
	<-attacked
	r.Duration = time.Since(r.AttackStarted)
	close(stop)
	<-sampled
	r.Mem.Peak = max(peak.Load(), r.Mem.Before)
	if c.Check != nil {
		r.Note, r.CheckErr = c.Check()
	}
	settle := c.Settle
	if settle <= 0 {
		settle = 200 * time.Millisecond
	}
	time.Sleep(settle)
	r.Mem.After = LiveHeap()
	r.Sent, r.Recv = b.sent.Load(), b.recv.Load()
	r.MinPacket, r.MaxReply = b.minPacket.Load(), b.maxRepl.Load()
	return r
}

// TB is the part of testing.TB that Assert uses.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
}

// Assert fails t unless at least 99% of the legitimate dials during the
// attack succeeded, the heap grew by no more than the budget, no reply
// was larger than the attacker's smallest packet, and Check passed.
func (r *Result) Assert(t TB) {
	t.Helper()
	if r.Attack.N == 0 || r.Attack.Rate() < 0.99 {
		t.Errorf("%s: %d of %d legitimate dials succeeded during the attack: %v", r.Name, r.Attack.OK, r.Attack.N, r.Attack.Errs)
	}
	if r.Budget > 0 && r.Mem.Peak > r.Mem.Before+r.Budget {
		t.Errorf("%s: heap grew from %s to %s, over the %s budget", r.Name, MiB(r.Mem.Before), MiB(r.Mem.Peak), MiB(r.Budget))
	}
	if r.MaxReply > r.MinPacket {
		t.Errorf("%s: a %d-byte reply to packets of at least %d bytes", r.Name, r.MaxReply, r.MinPacket)
	}
	if r.CheckErr != nil {
		t.Errorf("%s: %v", r.Name, r.CheckErr)
	}
}

func (r *Result) String() string {
	s := fmt.Sprintf("%s: no attack %v; attack %v; heap %v; amplification %s",
		r.Name, r.Base, r.Attack, r.Mem, r.amp())
	if r.Note != "" {
		s += "; " + r.Note
	}
	if r.CheckErr != nil {
		s += "; FAILED: " + r.CheckErr.Error()
	}
	if len(r.Attack.Errs) > 0 {
		s += fmt.Sprintf("; failed dials: %v", r.Attack.Errs)
	}
	return s
}

func (r *Result) amp() string {
	if r.Sent == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f (%d B back for %d B; largest reply %d B, smallest packet %d B)",
		r.Amplification(), r.Recv, r.Sent, r.MaxReply, r.MinPacket)
}

// Row formats r as a row of the table in docs/security.md.
func (r *Result) Row() string {
	pct := func(d *Dials) string { return fmt.Sprintf("%.1f%% (%d/%d)", 100*d.Rate(), d.OK, d.N) }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	amp := "n/a"
	if r.Sent > 0 {
		amp = fmt.Sprintf("%.2f", r.Amplification())
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |",
		r.Name, pct(r.Base), ms(r.Base.P99()), pct(r.Attack), ms(r.Attack.P99()),
		MiB(r.Mem.Before), MiB(r.Mem.Peak), MiB(r.Mem.After), amp)
}

// Header is the table header matching Row.
const Header = "| attack | dials, no attack | p99, no attack | dials, attack | p99, attack | heap before | heap during | heap after | bytes back per byte |\n" +
	"| --- | --- | --- | --- | --- | --- | --- | --- | --- |"

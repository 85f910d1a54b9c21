package quic

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/postsockets/postsockets/internal/hsrate"
	"github.com/postsockets/postsockets/post"
)

// Receive windows a listener gives a new connection: fullWindow, halved
// down to minWindow while over a quarter of the room its budget has. A stream's
// window is two thirds of its connection's, as quic-go's defaults are.
// At minWindow a source's share of the default budget holds its 1,024
// connections (Stack.MaxConnsPerSource).
const (
	fullWindow = 768 << 10 // quic-go's default
	minWindow  = 16 << 10
)

// streamCost is what a listener charges a connection's budget account
// for each stream the peer opens after its first (the root), from its
// arrival (its header awaited) until the fork's transient ends: the
// transient's and quic-go's state for the stream (about 4.9 KB a fork
// measured with both ends in one process, the dialler's raw quic-go
// state included; TestReceiveBudgetBoundsForks). psi/quic's
// read buffer is made by the first read and charged then (takeBuffer).
// Without the charge a peer's
// 1,000 streams a connection (Stack.MaxStreams), each sending a few
// bytes nobody reads, held about 20 MiB a connection (with the buffer
// made at once, as it was) outside the budget.
const streamCost = 4 << 10

// DefaultMemoryBudget is a listener's budget when Stack.MemoryBudget is
// zero.
const DefaultMemoryBudget = 256 << 20

// budget bounds what a listener's peers may have sent that its
// application has not read: the sum of every connection's receive
// window, as advertised, since quic-go keeps whatever arrives within it.
// A connection takes its first window when its first Initial is taken
// (smaller as the room left shrinks; without room for minWindow it is
// refused), and each growth of its window as quic-go's
// auto-tuning asks for it (AllowConnectionWindowIncrease: refused
// without room, so the window stays as it is). One source address
// (hsrate.Host) may hold a sixteenth of the budget and one /24 or /48
// prefix a quarter in windows above minWindow; windows of minWindow
// need room in the total only, so that a source's share does not bound
// its connection count below Stack.MaxConnsPerSource. Each stream the
// peer opens after its root is charged streamCost within the same
// shares, and refused without room (takeStream); each datagram queued
// until read, its size, and dropped without room (takeDatagram), also
// one for a stream not yet seen; a stream's read buffer, made small
// without room (takeBuffer); the copy of a whole stream kept unread
// (countReader.keepRest), not made without room (takeKept). The
// connection gives it all back when it ends, but for the copies, which
// outlive it until read or dropped.
type budget struct {
	mu      sync.Mutex
	limit   int64
	share   int64 // per source address
	pshare  int64 // per prefix
	used    int64
	peak    int64
	refused uint64
	// refusedStreams counts streams refused for want of room,
	// droppedDatagrams datagrams (Transient.pushDatagram), smallBuffers
	// read buffers made small and unkept whole streams not copied.
	refusedStreams, droppedDatagrams uint64
	smallBuffers, unkept             uint64
	// smallFrames counts connections closed for STREAM frames unread
	// (frames).
	smallFrames uint64
	// abused, if set, is told the source of each connection closed for
	// abuse (frames unread), to charge it (handshakes.abused).
	abused func(src netip.Addr)
	srcs   map[netip.Addr]int64
	pfxs   map[netip.Prefix]int64
	// pending is the account made for the Initial quic-go is taking,
	// until the connection's tracer binds it (see config); byCtx finds a
	// live connection's account by its context.
	pending *account
	byCtx   map[context.Context]*account
}

func newBudget(limit int64) *budget {
	return &budget{limit: limit, share: max(limit/16, minWindow), pshare: max(limit/4, minWindow),
		srcs: make(map[netip.Addr]int64), pfxs: make(map[netip.Prefix]int64), byCtx: make(map[context.Context]*account)}
}

// account is what one connection holds of a budget.
type account struct {
	b    *budget
	src  netip.Addr
	pfx  netip.Prefix
	held int64 // guarded by b.mu
	// kept is the part of held that copies of whole streams take
	// (takeKept); ended, whether the connection ended. Guarded by b.mu.
	kept  int64
	ended bool
	// refs is the connection (until it ends) and each keepRest that kept
	// data unread; guarded by b.mu. When the connection ends all but kept
	// goes back, at zero the rest.
	refs int
	// frames counts the heap behind the connection's STREAM frames
	// unread.
	frames frames
}

// takeLocked charges n to src and pfx if the total and both shares have
// room. Called with b.mu held.
func (b *budget) takeLocked(src netip.Addr, pfx netip.Prefix, n int64) bool {
	return b.takeOfLocked(src, pfx, n, 1)
}

// takeOfLocked is takeLocked within 1/part of the total and the shares.
func (b *budget) takeOfLocked(src netip.Addr, pfx netip.Prefix, n, part int64) bool {
	if b.used+n > b.limit/part || b.srcs[src]+n > b.share/part || b.pfxs[pfx]+n > b.pshare/part {
		return false
	}
	b.chargeLocked(src, pfx, n)
	return true
}

// chargeLocked charges n to src and pfx. Called with b.mu held.
func (b *budget) chargeLocked(src netip.Addr, pfx netip.Prefix, n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
	b.srcs[src] += n
	b.pfxs[pfx] += n
}

func (b *budget) giveLocked(src netip.Addr, pfx netip.Prefix, n int64) {
	b.used -= n
	if b.srcs[src] -= n; b.srcs[src] <= 0 {
		delete(b.srcs, src)
	}
	if b.pfxs[pfx] -= n; b.pfxs[pfx] <= 0 {
		delete(b.pfxs, pfx)
	}
}

// open makes the account of a connection from addr with the window
// that room allows, or fails with post.ErrRefused when minWindow does
// not. An account made before and never bound (its connection was
// refused after it, by Transport.ConnContext) is given back.
func (b *budget) open(addr netip.Addr, maxStreams, maxUniStreams int64) (*account, int64, error) {
	addr = addr.Unmap()
	a := &account{b: b, src: hsrate.Host(addr), pfx: hsrate.Prefix(addr), refs: 1}
	a.frames.init(func() {
		b.mu.Lock()
		b.smallFrames++
		abused := b.abused
		b.mu.Unlock()
		if abused != nil {
			abused(a.src)
		}
	}, maxStreams, maxUniStreams)
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.pending; p != nil {
		b.pending = nil
		b.unrefLocked(p)
	}
	// A quarter of the room left at most, so that an address's (or
	// the listener's) connections get smaller windows as they add up
	// rather than the last ones none. The smallest window needs room in
	// the total only: an address's share bounds what its windows hold
	// above it, and its connection bound how many it holds.
	room := min(b.limit-b.used, b.share-b.srcs[a.src], b.pshare-b.pfxs[a.pfx])
	w := int64(fullWindow)
	for w > minWindow && w > room/4 {
		w = max(w/2, minWindow)
	}
	if w > minWindow || b.used+w <= b.limit {
		b.chargeLocked(a.src, a.pfx, w)
		a.held = w
		a.frames.allow(w)
		b.pending = a
		return a, w, nil
	}
	b.refused++
	return nil, 0, post.Errorf(post.ErrRefused, "quic: receive budget full for %v", addr)
}

// bind ties the pending account to the context of its connection, which
// quic-go cancels when the connection ends (all but a connection quic-go
// drops for a connection ID already in use before running it, which
// admit.go's counts share).
func (b *budget) bind(ctx context.Context) {
	b.mu.Lock()
	a := b.pending
	b.pending = nil
	if a != nil {
		b.byCtx[ctx] = a
	}
	b.mu.Unlock()
	if a != nil {
		context.AfterFunc(ctx, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			delete(b.byCtx, ctx)
			a.ended = true
			b.unrefLocked(a)
		})
	}
}

// of returns the account of the connection whose context is ctx, nil
// if it has none (or has ended).
func (b *budget) of(ctx context.Context) *account {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byCtx[ctx]
}

// grow charges a growth of the connection's window by delta, if it fits.
func (a *account) grow(delta int64) bool {
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.refs == 0 || a.ended || !b.takeLocked(a.src, a.pfx, delta) {
		return false // given back already, or no room
	}
	a.held += delta
	a.frames.allow(delta)
	return true
}

// takeStream charges a stream's streamCost (take).
func (a *account) takeStream() bool {
	return a == nil || a.take(streamCost, &a.b.refusedStreams)
}

// takeDatagram charges a datagram queued until read n bytes (take).
func (a *account) takeDatagram(n int64) bool {
	return a == nil || a.take(n, &a.b.droppedDatagrams)
}

// takeBuffer charges a stream's read buffer (take) within half the
// total and the shares: the rest is kept for windows and streams, which
// a peer forking many streams that are all read (psitest ForkBurst, 1,000
// at once) needs more than full buffers.
func (a *account) takeBuffer() bool {
	return a == nil || a.takeOf(readBuffer, 2, &a.b.smallBuffers)
}

// readStream credits n bytes read from stream id, and err that ended
// the read, against the connection's unread frames (frames.readStream).
func (a *account) readStream(id quicgo.StreamID, n int, err error) {
	if a != nil {
		a.frames.readStream(id, n, err)
	}
}

// openedStream notes a stream accepted from the peer or opened
// (frames.opened).
func (a *account) openedStream(id quicgo.StreamID) {
	if a != nil {
		a.frames.opened(id)
	}
}

// cancelRead cancels the reading of s, and notes it (frames.cancel).
func (a *account) cancelRead(s cancelReader, code quicgo.StreamErrorCode) {
	s.CancelRead(code)
	if a != nil {
		a.frames.cancel(s.StreamID())
	}
}

// acctReader reads a stream psi/quic reads without a countReader (a
// header, the "done" stream), crediting what it reads to a
// (account.readStream).
type acctReader struct {
	s interface {
		io.Reader
		StreamID() quicgo.StreamID
	}
	a *account
}

func (r acctReader) Read(p []byte) (int, error) {
	n, err := r.s.Read(p)
	r.a.readStream(r.s.StreamID(), n, err)
	return n, err
}

// cancelReader is a stream whose reading can be cancelled.
type cancelReader interface {
	CancelRead(quicgo.StreamErrorCode)
	StreamID() quicgo.StreamID
}

// giveStream gives back what takeStream charged (give).
func (a *account) giveStream() { a.give(streamCost) }

// takeKept charges the n-byte copy of a whole stream that keepRest
// keeps unread, to be given back with giveKept; it stays charged after
// the connection ends (see pin). A nil account always has room.
func (a *account) takeKept(n int64) bool {
	if a == nil {
		return true
	}
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.refs == 0 || a.ended || !b.takeLocked(a.src, a.pfx, n) {
		b.unkept++
		return false
	}
	a.held += n
	a.kept += n
	return true
}

// giveKept gives back n that takeKept charged.
func (a *account) giveKept(n int64) {
	if a == nil || n <= 0 {
		return
	}
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.refs > 0 && a.kept >= n {
		a.kept -= n
		a.held -= n
		b.giveLocked(a.src, a.pfx, n)
	}
}

// take charges n, if it fits in the total and the source's and
// prefix's shares, and counts a refusal in refusals (a field of the
// budget, under its lock). A nil account (a dialled connection) always
// has room: see takeStream, takeDatagram.
func (a *account) take(n int64, refusals *uint64) bool {
	return a.takeOf(n, 1, refusals)
}

// takeOf is take within 1/part of the total and the shares.
func (a *account) takeOf(n, part int64, refusals *uint64) bool {
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.refs == 0 || a.ended || !b.takeOfLocked(a.src, a.pfx, n, part) {
		*refusals++
		return false
	}
	a.held += n
	return true
}

// give gives back n that take charged, unless the account gave it back
// already (its connection ended). A nil account has nothing.
func (a *account) give(n int64) {
	if a == nil || n <= 0 {
		return
	}
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.refs > 0 && !a.ended && a.held-a.kept >= n {
		a.held -= n
		b.giveLocked(a.src, a.pfx, n)
	}
}

// pin keeps the account's charge past its connection's end; the
// returned func gives the pin back, once.
func (a *account) pin() func() {
	if a == nil {
		return func() {}
	}
	b := a.b
	b.mu.Lock()
	a.refs++
	b.mu.Unlock()
	return sync.OnceFunc(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.unrefLocked(a)
	})
}

// unrefLocked drops a reference to a: at zero all it holds goes back,
// once the connection ended all but kept.
func (b *budget) unrefLocked(a *account) {
	give := a.held
	if a.refs--; a.refs > 0 {
		if !a.ended {
			return
		}
		give -= a.kept
	}
	b.giveLocked(a.src, a.pfx, give)
	a.held -= give
	if a.refs == 0 {
		a.kept = 0
	}
}

// BudgetStats is a listener's receive-budget accounting (see
// Stack.MemoryBudget).
type BudgetStats struct {
	Budget  int64  // the limit; zero when off
	Held    int64  // charged now: windows, and what the fields below count
	Peak    int64  // the most held at once
	Refused uint64 // Initials refused for want of room (a client may send several)
	// RefusedStreams counts forked streams refused for want of room
	// for their state (streamCost).
	RefusedStreams uint64
	// DroppedDatagrams counts received datagrams dropped for want of
	// room to queue them until read.
	DroppedDatagrams uint64
	// SmallReadBuffers counts streams whose read buffer was made small
	// (minReadBuffer) for want of room for a full one.
	SmallReadBuffers uint64
	// UnkeptStreams counts whole streams arrived unread that were not
	// copied to outlive their connection for want of room: the peer's
	// close waits for the application's read instead.
	UnkeptStreams uint64
	// SmallFrameCloses counts connections closed, as refused, for
	// STREAM frames unread whose heap in quic-go exceeded a bound (4
	// times the connection's window; Stack.DisableSmallFrameCount).
	SmallFrameCloses uint64
}

func (b *budget) stats() BudgetStats {
	if b == nil {
		return BudgetStats{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return BudgetStats{
		Budget: b.limit, Held: b.used, Peak: b.peak, Refused: b.refused,
		RefusedStreams: b.refusedStreams, DroppedDatagrams: b.droppedDatagrams,
		SmallReadBuffers: b.smallBuffers, UnkeptStreams: b.unkept,
		SmallFrameCloses: b.smallFrames,
	}
}

// config returns base with the budget's callbacks: each incoming
// connection gets a config of its own, its windows sized by open and
// their growth charged to its account. quic-go calls GetConfigForClient,
// Transport.ConnContext and the Tracer for one Initial after another on
// the listener's one goroutine, so pending passes the account from the
// first to the last. With count, or when base traces the connection,
// the heap behind its unread STREAM frames is counted too (frames).
func (b *budget) config(base *quicgo.Config, count bool) *quicgo.Config {
	cfg := base.Clone()
	cfg.GetConfigForClient = func(ci *quicgo.ClientInfo) (*quicgo.Config, error) {
		var addr netip.Addr
		if ua, ok := ci.RemoteAddr.(*net.UDPAddr); ok {
			addr = ua.AddrPort().Addr()
		}
		a, w, err := b.open(addr, base.MaxIncomingStreams, base.MaxIncomingUniStreams)
		if err != nil {
			return nil, err
		}
		c := base.Clone()
		c.InitialConnectionReceiveWindow = uint64(w)
		c.InitialStreamReceiveWindow = uint64(w * 2 / 3)
		c.AllowConnectionWindowIncrease = func(_ *quicgo.Conn, delta uint64) bool {
			return a.grow(int64(delta))
		}
		next := base.Tracer
		c.Tracer = func(ctx context.Context, isClient bool, id quicgo.ConnectionID) qlogwriter.Trace {
			b.bind(ctx)
			var inner qlogwriter.Trace
			if next != nil {
				inner = next(ctx, isClient, id)
			}
			if !count && inner == nil {
				return nil // quic-go builds no events
			}
			return a.frames.trace(inner)
		}
		return c, nil
	}
	return cfg
}

// dropPending gives back the pending account of a connection refused after
// GetConfigForClient.
func (b *budget) dropPending() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.pending; p != nil {
		b.pending = nil
		b.unrefLocked(p)
	}
}

package quic

import (
	"container/heap"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// quic-go keeps each STREAM frame received apart until the application
// reads past it, with heap of its own that the budget's window charge
// does not see (docs/security.md, "QUIC: unread STREAM frames"): one of
// under smallFrame bytes in a copy of its own, with a frame struct and
// the frame sorter's entry, about 130 bytes of heap whatever its
// length; a longer one in a pooled buffer of a whole packet
// (protocol.MaxPacketBufferSize, 1,452 bytes), up to 11 times its
// length.
const (
	// smallFrame is the length under which quic-go copies a frame's
	// data (protocol.MinStreamFrameBufferSize).
	smallFrame = 128
	// frameOverhead is the heap a frame takes beyond its data: quic-go's
	// frame struct and sorter entry, and this count's record of it.
	frameOverhead = 128
	// packetBuffer is the buffer quic-go keeps a frame of smallFrame
	// bytes or more in.
	packetBuffer = 1452
	// heapPerWindow is how many bytes of frames' heap a byte of a
	// connection's window allows unread: past that it is closed.
	heapPerWindow = 4
)

// frameCost is the heap quic-go keeps for a received STREAM frame of n
// bytes until it is read.
func frameCost(n int64) int64 {
	if n < smallFrame {
		return n + frameOverhead
	}
	return packetBuffer + frameOverhead
}

// frames counts the heap quic-go keeps for the STREAM frames a server
// connection received and the application has not read (frameCost), and
// closes the connection as refused once it exceeds heapPerWindow times
// the connection's window. A frame is given back once the stream's
// reads went past its end. A stream psi/quic is done with (read to its
// end, reset by the peer and read, or its reading cancelled and its
// final size known) keeps what it holds until quic-go forgets it
// (doneStreams): quic-go keeps the frames of a cancelled stream, or
// those past a reset, with the stream. A stream is known from its first
// frame, or from its acceptance or opening; a frame for a stream
// psi/quic accepted or opened and is done with is not counted.
type frames struct {
	mu      sync.Mutex
	held    int64 // frames' heap unread
	limit   int64 // the window's bytes times heapPerWindow
	streams map[quicgo.StreamID]*streamFrames
	// accepted is the highest stream of each kind the peer opened that
	// psi/quic accepted (quic-go hands them over in order), -1 none.
	accepted [4]quicgo.StreamID
	// done is, for the peer's bidirectional and unidirectional streams,
	// those psi/quic is done with that quic-go may still hold.
	done [2]doneStreams
	// on is set once the connection is traced: without a trace there
	// is nothing to count, and reads skip the lock.
	on   atomic.Bool
	over atomic.Bool
	qc   atomic.Pointer[quicgo.Conn]
	// refused counts the connection in BudgetStats, once.
	refused func()
}

// streamFrames is one stream's frames unread, by their end.
type streamFrames struct {
	read      int64 // bytes read
	final     int64 // final size, -1 until known
	cancelled bool  // its reading cancelled
	held      int64 // heap of q[head:]
	q         []frameRec
	head      int
}

type frameRec struct{ end, cost int64 }

// doneStreams counts the peer's streams of one kind that psi/quic is
// done with, whose frames quic-go keeps until it forgets the stream:
// once our side of it is complete too (what we sent on it acknowledged),
// which the peer may put off. quic-go does not say which streams it
// forgot, only how many, in the MAX_STREAMS frames it sends (maxStreams
// less its limit); so of the streams done, as many as it forgot are
// given back, those holding least first, and the others stay charged.
type doneStreams struct {
	limit   int64 // quic-go's MaxIncomingStreams or MaxIncomingUniStreams
	n       int64 // streams done
	forgot  int64 // streams quic-go forgot
	retired int64 // streams given back
	empty   int64 // streams done holding nothing, not given back
	held    costHeap
}

// costHeap is a min-heap of the frames' heap streams done hold.
type costHeap []int64

func (h costHeap) Len() int           { return len(h) }
func (h costHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h costHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *costHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *costHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// init sets f up, with refused to count its close and the connection's
// limits on the streams the peer opens (quic.Config's).
func (f *frames) init(refused func(), maxStreams, maxUniStreams int64) {
	f.refused = refused
	f.accepted = [4]quicgo.StreamID{-1, -1, -1, -1}
	f.done[0].limit, f.done[1].limit = quicgoLimit(maxStreams), quicgoLimit(maxUniStreams)
}

// quicgoLimit is quic-go's limit for a Config's MaxIncoming(Uni)Streams.
func quicgoLimit(n int64) int64 {
	switch {
	case n == 0:
		return 100 // quic-go's default
	case n < 0:
		return 0
	}
	return n
}

// trace returns a trace that shows next's events (next nil for none)
// to f first.
func (f *frames) trace(next qlogwriter.Trace) qlogwriter.Trace {
	f.on.Store(true)
	return &tapTrace{tap: f.observe, next: next}
}

// observe counts the STREAM frames of a received packet, and notes final
// sizes. quic-go calls it on the connection's goroutine after handling
// the packet, so a frame may have been read already.
func (f *frames) observe(ev qlogwriter.Event) {
	p, ok := ev.(qlog.PacketReceived)
	if !ok {
		if p, ok := ev.(qlog.PacketSent); ok {
			f.sent(p.Frames)
		}
		return
	}
	f.mu.Lock()
	for _, fr := range p.Frames {
		switch x := fr.Frame.(type) {
		case *qlog.StreamFrame:
			f.frameLocked(x.StreamID, x.Offset, x.Length, x.Fin)
		case *qlog.ResetStreamFrame:
			f.frameLocked(x.StreamID, int64(x.FinalSize), 0, true)
		}
	}
	over := f.held > f.limit
	f.mu.Unlock()
	if over && f.over.CompareAndSwap(false, true) {
		f.refused()
		f.close()
	}
}

// frameLocked counts a frame of n bytes at off on stream id (n zero: a
// final size only).
func (f *frames) frameLocked(id quicgo.StreamID, off, n int64, fin bool) {
	s := f.streams[id]
	if s == nil {
		// Unknown: a peer's stream not yet accepted, or one done with
		// (or never opened: quic-go closes the connection).
		if !f.peerOpened(id) || id <= f.accepted[id&3] {
			return
		}
		s = f.addLocked(id)
	}
	end := off + n
	if fin {
		s.final = end
	}
	if n > 0 && !s.cancelled && end > s.read {
		c := frameCost(n)
		s.push(end, c)
		f.held += c
	}
	if s.cancelled && s.final >= 0 {
		f.finishLocked(id, s)
	}
}

// sent notes the MAX_STREAMS frames among a sent packet's frames: how
// many of the peer's streams quic-go forgot.
func (f *frames) sent(frames []qlog.Frame) {
	for _, fr := range frames {
		x, ok := fr.Frame.(*qlog.MaxStreamsFrame)
		if !ok {
			continue
		}
		d := &f.done[1]
		if x.Type == streamTypeBidi {
			d = &f.done[0]
		}
		f.mu.Lock()
		if forgot := int64(x.MaxStreamNum) - d.limit; forgot > d.forgot {
			d.forgot = forgot
			f.retireLocked(d)
		}
		f.mu.Unlock()
	}
}

// streamTypeBidi is quic-go's protocol.StreamTypeBidi.
const streamTypeBidi = 1

// finishLocked forgets a stream psi/quic is done with. The peer's
// streams count as done; what ours hold stays charged (how many quic-go
// forgot does not show).
func (f *frames) finishLocked(id quicgo.StreamID, s *streamFrames) {
	delete(f.streams, id)
	if !f.peerOpened(id) {
		return
	}
	d := &f.done[id>>1&1]
	d.n++
	if s.held > 0 {
		heap.Push(&d.held, s.held)
	} else {
		d.empty++
	}
	f.retireLocked(d)
}

// retireLocked gives back as many done streams as quic-go forgot, those
// holding least first.
func (f *frames) retireLocked(d *doneStreams) {
	for d.retired < d.forgot && d.retired < d.n {
		if d.empty > 0 {
			d.empty--
		} else {
			f.held -= heap.Pop(&d.held).(int64)
		}
		d.retired++
	}
}

// peerOpened reports whether the peer (a client) opens stream id.
func (f *frames) peerOpened(id quicgo.StreamID) bool { return id&1 == 0 }

func (f *frames) addLocked(id quicgo.StreamID) *streamFrames {
	if f.streams == nil {
		f.streams = make(map[quicgo.StreamID]*streamFrames)
	}
	s := &streamFrames{final: -1}
	f.streams[id] = s
	return s
}

// push records a frame ending at end, keeping q sorted by end: a
// frame's heap goes once the reads pass its end.
func (s *streamFrames) push(end, cost int64) {
	s.q = append(s.q, frameRec{end, cost})
	for i := len(s.q) - 1; i > s.head && s.q[i-1].end > end; i-- {
		s.q[i-1], s.q[i] = s.q[i], s.q[i-1]
	}
	s.held += cost
}

// pop gives back the frames the reads went past, and returns their heap.
func (s *streamFrames) pop() int64 {
	var n int64
	for s.head < len(s.q) && s.q[s.head].end <= s.read {
		n += s.q[s.head].cost
		s.head++
	}
	switch {
	case s.head == len(s.q):
		s.q, s.head = s.q[:0], 0
	case s.head >= 64 && 2*s.head >= len(s.q):
		s.q = s.q[:copy(s.q, s.q[s.head:])]
		s.head = 0
	}
	s.held -= n
	return n
}

// opened notes a stream psi/quic accepted from the peer or opened, so
// that its frames are known to be its until it is done.
func (f *frames) opened(id quicgo.StreamID) {
	if !f.on.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peerOpened(id) {
		f.accepted[id&3] = max(f.accepted[id&3], id)
	}
	if f.streams[id] == nil {
		f.addLocked(id)
	}
}

// readStream credits n bytes read from stream id, and ends the stream
// when err says it is done: at its end, or reset by the peer.
func (f *frames) readStream(id quicgo.StreamID, n int, err error) {
	done := err != nil && peerEnded(err)
	if n <= 0 && !done || !f.on.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.streams[id]
	if s == nil {
		return
	}
	s.read += int64(n)
	f.held -= s.pop()
	if done {
		f.finishLocked(id, s)
	}
}

// peerEnded reports whether a read failed because the peer ended the
// stream: at its end, or with a reset.
func peerEnded(err error) bool {
	var se *quicgo.StreamError
	return err == io.EOF || errors.As(err, &se) && se.Remote
}

// cancel notes that the reading of stream id was cancelled: its frames
// go back once its final size is known, when quic-go completes it.
func (f *frames) cancel(id quicgo.StreamID) {
	if !f.on.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.streams[id]; s != nil {
		s.cancelled = true
		if s.final >= 0 {
			f.finishLocked(id, s)
		}
	}
}

// allow raises the limit for n more bytes of window.
func (f *frames) allow(n int64) {
	f.mu.Lock()
	f.limit += n * heapPerWindow
	f.mu.Unlock()
}

// bind gives f the connection to close, once psi/quic has it.
func (f *frames) bind(qc *quicgo.Conn) {
	f.qc.Store(qc)
	if f.over.Load() {
		f.close()
	}
}

// close closes the connection, if bound, as refused. Not on the
// connection's goroutine: CloseWithError waits for it.
func (f *frames) close() {
	if qc := f.qc.Load(); qc != nil {
		go qc.CloseWithError(codeRefused, "too much unread STREAM frame data")
	}
}

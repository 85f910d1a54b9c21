package quic

import (
	"sync/atomic"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// quic-go keeps each STREAM frame received apart until the application
// reads it: one under smallFrame bytes in a copy of its own, with a
// frame struct and a map entry, about 130 bytes of heap whatever its
// length, which the budget's window charge does not see
// (docs/security.md, Open).
const (
	// smallFrame is the length under which quic-go copies a frame's
	// data (protocol.MinStreamFrameBufferSize); a longer one pins its
	// packet's buffer, at most 11 times its length.
	smallFrame = 128
	// windowPerFrame is how many bytes of a connection's window allow
	// it one small frame beyond the bytes read from it: past that it
	// is closed. quic-go's heap behind them then adds at most about 4
	// times the window (768 KiB: 24,576 frames; 16 KiB: 512).
	windowPerFrame = 32
)

// frames counts the small STREAM frames a server connection received
// against the stream bytes read from it, and closes the connection when
// the frames exceed the bytes by more than its window allows
// (windowPerFrame). Each frame carries at least a byte, so that many
// frames at least are held unread.
type frames struct {
	small atomic.Int64 // small frames received, with data
	read  atomic.Int64 // stream bytes read, and 1 a stream header
	limit atomic.Int64 // the window's bytes / windowPerFrame
	over  atomic.Bool
	qc    atomic.Pointer[quicgo.Conn]
	// refused counts the connection in BudgetStats, once.
	refused func()
}

// trace returns a trace that shows next's events (next nil for none)
// to f first.
func (f *frames) trace(next qlogwriter.Trace) qlogwriter.Trace {
	return &tapTrace{tap: f.observe, next: next}
}

// observe counts the small STREAM frames of a received packet. quic-go
// calls it on the connection's goroutine.
func (f *frames) observe(ev qlogwriter.Event) {
	p, ok := ev.(qlog.PacketReceived)
	if !ok {
		return
	}
	var n int64
	for _, fr := range p.Frames {
		if sf, ok := fr.Frame.(*qlog.StreamFrame); ok && sf.Length > 0 && sf.Length < smallFrame {
			n++
		}
	}
	if n > 0 && f.small.Add(n)-f.read.Load() > f.limit.Load() && f.over.CompareAndSwap(false, true) {
		f.refused()
		f.close()
	}
}

// allow raises the limit for n more bytes of window.
func (f *frames) allow(n int64) {
	f.limit.Add(n / windowPerFrame)
}

// readBytes credits n stream bytes read.
func (f *frames) readBytes(n int64) {
	if n > 0 {
		f.read.Add(n)
	}
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
		go qc.CloseWithError(codeRefused, "too many small frames unread")
	}
}

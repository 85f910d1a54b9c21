package fsp

import "github.com/postsockets/postsockets/psi/fsp/internal/sockio"

// The socket receive buffer of a listener. Its connections' data all
// arrive on one socket, and at 4 MiB four bulk flows overflowed it
// whenever the reader lost its core for a moment. A large buffer is also
// a long queue in front of every handshake, though, so during a flood of
// handshake packets legitimate dials waited seconds behind it. So the
// buffer grows, to maxListenerBuffer at once, only when the socket drops
// datagrams, or is half full, while nearly all it carries is for
// established connections, and goes back to socketBuffer as soon as
// handshakes and other unrouted datagrams are more than a small share.

const (
	// maxListenerBuffer is the largest buffer a listener grows to. The
	// kernel grants more than net.core.rmem_max only to a process that
	// may force it (sockio.SetReadBuffer).
	maxListenerBuffer = 16 << 20
	// rcvbufWindow is the datagrams between two looks at the buffer.
	rcvbufWindow = 1024
	// rcvbufForeign is the most datagrams in a window that were not for
	// an established connection with which the buffer may grow (1/16);
	// more shrink it.
	rcvbufForeign = rcvbufWindow / 16
)

// rcvbufTuner sizes a listener's socket receive buffer. The socket
// reader's own.
type rcvbufTuner struct {
	on    bool   // an owned listener socket: tune it
	size  int    // the size last asked for
	n     int    // datagrams read in this window
	other int    // of which not routed to an established connection
	drops uint64 // the socket's drops at the last look
}

// tuneRcvbuf counts k datagrams read, of which other were not routed to a
// connection, and once a window is full resizes the buffer if it should.
func (t *Transport) tuneRcvbuf(k, other int) {
	r := &t.rcvbuf
	if !r.on {
		return
	}
	r.n += k
	r.other += other
	if r.n < rcvbufWindow {
		return
	}
	busy := r.other > rcvbufForeign
	r.n, r.other = 0, 0
	switch {
	case busy && r.size > socketBuffer:
		r.size = socketBuffer
		sockio.SetReadBuffer(t.udp, r.size)
	case !busy && r.size < maxListenerBuffer:
		// Grow on a drop, or before one: when the reader left half the
		// buffer full.
		q, size, d := sockio.Backlog(t.udp)
		if d != r.drops || q > size/2 {
			r.drops = d
			r.size = maxListenerBuffer
			sockio.SetReadBuffer(t.udp, r.size)
		}
	}
}

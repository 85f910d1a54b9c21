package sockio

import "sync/atomic"

// A Hold is the receive space of datagrams that LendBatch lent and the
// caller kept past the next read (Conn.Keep). It counts shares: the
// reader's own while it reads from the space, and one for each datagram
// kept. The space goes back to its pool when the last share is released,
// so no read reuses it while a kept datagram is still in use.
type Hold struct {
	refs atomic.Int32
	// owner counts its Conn's kept spaces; set while the space is kept.
	owner atomic.Pointer[atomic.Int32]
	free  func() // gives the space back to its pool
}

// Add adds n shares, one for each datagram the caller keeps. It must be
// called before the next LendBatch or ReadBatch of the Conn that lent
// them.
func (h *Hold) Add(n int) {
	if n > 0 {
		h.refs.Add(int32(n))
	}
}

// Release gives back n shares. Releasing more shares than were added is a
// bug in the caller (the space could be reused while still read), and
// panics.
func (h *Hold) Release(n int) {
	if n <= 0 {
		return
	}
	r := h.refs.Add(-int32(n))
	switch {
	case r < 0:
		panic("sockio: Hold released more often than kept")
	case r == 0:
		if o := h.owner.Swap(nil); o != nil {
			o.Add(-1)
		}
		h.free()
	}
}

// Shares returns the shares outstanding, for tests.
func (h *Hold) Shares() int { return int(h.refs.Load()) }

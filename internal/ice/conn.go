package ice

import (
	"net"
	"os"
	"sync"
	"time"

	pice "github.com/pion/ice/v2"

	"github.com/postsockets/postsockets/post"
)

// PacketConn carries datagrams over the selected candidate pair. It is
// connected to one peer: WriteTo ignores its address argument and always
// sends on the currently selected pair, and ReadFrom always reports the
// peer's address on the pair first selected, so layers above that key
// state by address see one stable peer. Closing it closes the Agent.
type PacketConn struct {
	agent *Agent
	c     *pice.Conn
	peer  net.Addr // the remote address first selected

	in       chan *[]byte
	pool     sync.Pool // datagram buffers of capacity smallPacket
	closed   chan struct{}
	readDone chan struct{} // closed when the reader goroutine exits
	readErr  error         // set before readDone is closed

	rd, wd deadline
}

func newPacketConn(a *Agent, c *pice.Conn) *PacketConn {
	pc := &PacketConn{
		agent:    a,
		c:        c,
		in:       make(chan *[]byte, readQueue),
		closed:   make(chan struct{}),
		readDone: make(chan struct{}),
	}
	pc.rd.ch = make(chan struct{})
	pc.wd.ch = make(chan struct{})
	pc.pool.New = func() any {
		b := make([]byte, smallPacket)
		return &b
	}
	pc.peer = pc.RemoteAddr()
	go pc.reader()
	return pc
}

const (
	// readQueue is how many datagrams the reader may run ahead of ReadFrom.
	readQueue = 128
	// smallPacket is the size of pooled datagram buffers.
	smallPacket = 2048
)

// reader moves datagrams from pion's buffer to ReadFrom. pion's buffer
// (1 MB) queues datagrams while no ReadFrom is waiting.
func (pc *PacketConn) reader() {
	defer close(pc.readDone)
	buf := make([]byte, 1<<16)
	for {
		n, err := pc.c.Read(buf)
		if err != nil {
			pc.readErr = err
			return
		}
		var p *[]byte
		if n <= smallPacket {
			p = pc.pool.Get().(*[]byte)
			*p = (*p)[:n]
		} else {
			b := make([]byte, n)
			p = &b
		}
		copy(*p, buf[:n])
		select {
		case pc.in <- p:
		case <-pc.closed:
			return
		}
	}
}

// ReadFrom reads one datagram. A datagram longer than p is truncated.
// Once the path fails (the peer fell silent for DisconnectedTimeout plus
// FailedTimeout) reads and writes return an error matching both
// post.ErrTimeout and net.ErrClosed.
func (pc *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case d := <-pc.in:
		n := copy(p, *d)
		if cap(*d) == smallPacket {
			pc.pool.Put(d)
		}
		return n, pc.peer, nil
	case <-pc.closed:
		return 0, nil, errClosed
	case <-pc.agent.failed:
		return 0, nil, errFailed
	case <-pc.readDone:
		select {
		case <-pc.closed:
			return 0, nil, errClosed
		default:
		}
		return 0, nil, mapErr("read", pc.readErr)
	case <-pc.rd.wait():
		return 0, nil, errTimeout
	}
}

// WriteTo sends p to the peer over the selected pair; addr is ignored.
func (pc *PacketConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-pc.closed:
		return 0, errClosed
	case <-pc.wd.wait():
		return 0, errTimeout
	case <-pc.agent.failed:
		return 0, errFailed
	default:
	}
	n, err := pc.c.Write(p)
	if err != nil {
		select {
		case <-pc.closed:
			return 0, errClosed
		default:
		}
		return n, mapErr("write", err)
	}
	return n, nil
}

// Close closes the connection and its Agent.
func (pc *PacketConn) Close() error { return pc.agent.Close() }

// LocalAddr is the local address of the selected pair.
func (pc *PacketConn) LocalAddr() net.Addr {
	if a := pc.c.LocalAddr(); a != nil {
		return a
	}
	return &net.UDPAddr{}
}

// RemoteAddr is the peer's address on the currently selected pair.
func (pc *PacketConn) RemoteAddr() net.Addr {
	if a := pc.c.RemoteAddr(); a != nil {
		return a
	}
	return &net.UDPAddr{}
}

// SetDeadline sets the read and write deadlines.
func (pc *PacketConn) SetDeadline(t time.Time) error {
	pc.rd.set(t)
	pc.wd.set(t)
	return nil
}

// SetReadDeadline sets the read deadline.
func (pc *PacketConn) SetReadDeadline(t time.Time) error { pc.rd.set(t); return nil }

// SetWriteDeadline sets the write deadline.
func (pc *PacketConn) SetWriteDeadline(t time.Time) error { pc.wd.set(t); return nil }

// BytesSent and BytesReceived count payload bytes on the connection.
func (pc *PacketConn) BytesSent() uint64     { return pc.c.BytesSent() }
func (pc *PacketConn) BytesReceived() uint64 { return pc.c.BytesReceived() }

// deadline is a settable deadline whose expiry closes a channel.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired: its close is done or imminent
	}
	d.timer = nil
	select {
	case <-d.ch:
		d.ch = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.ch)
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(dur, func() { close(ch) })
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// netError is an error that also matches the standard library's and post's
// sentinels, so callers may test for either.
type netError struct {
	msg     string
	timeout bool
	is      []error
}

func (e *netError) Error() string   { return e.msg }
func (e *netError) Timeout() bool   { return e.timeout }
func (e *netError) Temporary() bool { return e.timeout }
func (e *netError) Is(target error) bool {
	for _, t := range e.is {
		if t == target {
			return true
		}
	}
	return false
}

var (
	errTimeout = &netError{msg: "ice: i/o timeout", timeout: true, is: []error{os.ErrDeadlineExceeded, post.ErrTimeout}}
	errClosed  = &netError{msg: "ice: use of closed connection", is: []error{net.ErrClosed, post.ErrClosed}}
	// errFailed is permanent: ICE consent expired and the path is gone.
	// It matches net.ErrClosed so that read loops stop.
	errFailed = &netError{msg: "ice: path to peer failed", is: []error{net.ErrClosed, post.ErrTimeout}}
)

package netem

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/post"
)

// Receive queue bounds of a duplex PacketConn, like a socket buffer.
const (
	maxQueuedPackets = 4096
	maxQueuedBytes   = 4 << 20
)

// PacketConn is a net.PacketConn whose traffic passes through emulated
// impairments. Outbound packets always do; inbound ones only when made by
// NewDuplex. It is safe for concurrent use.
type PacketConn struct {
	c       net.PacketConn
	out     *link[net.Addr]
	in      *link[net.Addr] // nil unless duplex
	wd, rd  *deadline
	closing chan struct{}
	closed  atomic.Bool

	// Inbound without impairments: read straight from c.
	inBlackhole atomic.Bool
	inStats     counters

	// Duplex inbound: a pump reads c into in, which fills the queue.
	qmu      sync.Mutex
	q        ring
	qBytes   int
	notify   chan struct{}
	pumpDone chan struct{}
	pumpErr  error
}

type rxPacket struct {
	buf  *[]byte
	addr net.Addr
}

// New wraps c so that packets written to it are impaired by out. Reads
// are passed through. The PacketConn owns c and closes it on Close.
func New(c net.PacketConn, out Config) *PacketConn {
	pc := newConn(c, out)
	pc.inBlackhole.Store(out.Blackhole)
	return pc
}

// NewDuplex is like New but also impairs received packets with in. A
// goroutine reads c until Close.
func NewDuplex(c net.PacketConn, out, in Config) *PacketConn {
	pc := newConn(c, out)
	pc.notify = make(chan struct{}, 1)
	pc.pumpDone = make(chan struct{})
	pc.in = newLink(in, pc.enqueue)
	go pc.pump()
	return pc
}

// Listen opens a UDP socket with net.ListenPacket and wraps it with New.
func Listen(network, address string, out Config) (*PacketConn, error) {
	c, err := net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return New(c, out), nil
}

func newConn(c net.PacketConn, out Config) *PacketConn {
	pc := &PacketConn{
		c:       c,
		wd:      newDeadline(),
		rd:      newDeadline(),
		closing: make(chan struct{}),
	}
	udp, _ := c.(*net.UDPConn)
	pc.out = newLink(out, func(b []byte, to net.Addr) error {
		if ua, ok := to.(*net.UDPAddr); ok && udp != nil {
			_, err := udp.WriteToUDPAddrPort(b, ua.AddrPort()) // no allocation
			return err
		}
		_, err := c.WriteTo(b, to)
		return err
	})
	return pc
}

func (c *PacketConn) opErr(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: c.c.LocalAddr().Network(), Source: c.c.LocalAddr(), Addr: addr, Err: err}
}

// WriteTo impairs p and sends it to addr. A packet that is delayed is
// copied, so p may be reused on return. Dropping a packet is not an
// error, as on a real network.
func (c *PacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.closed.Load() {
		return 0, c.opErr("write", addr, errClosed)
	}
	if closedChan(c.wd.wait()) {
		return 0, c.opErr("write", addr, timeoutError{})
	}
	if len(p) > largeBuf {
		return 0, c.opErr("write", addr, post.Errorf(post.ErrMessageTooLarge, "%d byte datagram", len(p)))
	}
	if err := c.out.send(p, addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrom reads the next packet. Close and the read deadline unblock it.
func (c *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.in != nil {
		return c.readQueue(p)
	}
	for {
		n, addr, err := c.c.ReadFrom(p)
		if err != nil {
			switch {
			case c.closed.Load() || errors.Is(err, net.ErrClosed):
				err = c.opErr("read", nil, errClosed)
			case errors.Is(err, os.ErrDeadlineExceeded):
				err = c.opErr("read", nil, timeoutError{})
			}
			return n, addr, err
		}
		if c.inBlackhole.Load() {
			c.inStats.dropped.Add(1)
			continue
		}
		c.inStats.packets.Add(1)
		c.inStats.bytes.Add(uint64(n))
		return n, addr, nil
	}
}

func (c *PacketConn) readQueue(p []byte) (int, net.Addr, error) {
	for {
		if c.closed.Load() {
			return 0, nil, c.opErr("read", nil, errClosed)
		}
		rd := c.rd.wait()
		if closedChan(rd) {
			return 0, nil, c.opErr("read", nil, timeoutError{})
		}
		c.qmu.Lock()
		if c.q.len() > 0 {
			rx := c.q.pop()
			c.qBytes -= len(*rx.buf)
			more := c.q.len() > 0
			c.qmu.Unlock()
			if more {
				c.signal()
			}
			n := copy(p, *rx.buf)
			putBuf(rx.buf)
			return n, rx.addr, nil
		}
		c.qmu.Unlock()
		select {
		case <-c.notify:
		case <-rd:
		case <-c.closing:
		case <-c.pumpDone:
			c.qmu.Lock()
			empty := c.q.len() == 0
			c.qmu.Unlock()
			if empty {
				return 0, nil, c.pumpErr
			}
		}
	}
}

func (c *PacketConn) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// pump reads the underlying socket into the inbound link.
func (c *PacketConn) pump() {
	defer close(c.pumpDone)
	buf := make([]byte, largeBuf)
	for {
		n, addr, err := c.c.ReadFrom(buf)
		if err != nil {
			if c.closed.Load() || errors.Is(err, net.ErrClosed) {
				err = c.opErr("read", nil, errClosed)
			}
			c.pumpErr = err
			return
		}
		c.in.send(buf[:n], addr)
	}
}

// enqueue is the inbound link's delivery: it queues a packet for ReadFrom.
func (c *PacketConn) enqueue(b []byte, from net.Addr) error {
	c.qmu.Lock()
	if c.q.len() >= maxQueuedPackets || c.qBytes+len(b) > maxQueuedBytes {
		c.qmu.Unlock()
		return errDropped
	}
	c.q.push(rxPacket{buf: getBuf(b), addr: from})
	c.qBytes += len(b)
	c.qmu.Unlock()
	c.signal()
	return nil
}

// Close closes the underlying socket, drops packets still in flight,
// unblocks readers and stops every goroutine the PacketConn started.
func (c *PacketConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.opErr("close", nil, errClosed)
	}
	close(c.closing)
	c.out.shutdown()
	err := c.c.Close()
	<-c.out.done
	if c.in != nil {
		<-c.pumpDone
		c.in.close()
		c.qmu.Lock()
		for c.q.len() > 0 {
			putBuf(c.q.pop().buf)
		}
		c.qmu.Unlock()
	}
	c.rd.stop()
	c.wd.stop()
	return err
}

// LocalAddr returns the underlying socket's address.
func (c *PacketConn) LocalAddr() net.Addr { return c.c.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (c *PacketConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for ReadFrom.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", nil, errClosed)
	}
	if c.in != nil {
		c.rd.set(t)
		return nil
	}
	return c.c.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline for WriteTo.
func (c *PacketConn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", nil, errClosed)
	}
	c.wd.set(t)
	return c.c.SetWriteDeadline(t)
}

// SetReadBuffer sets the underlying socket's receive buffer, if it has one.
func (c *PacketConn) SetReadBuffer(n int) error {
	if s, ok := c.c.(interface{ SetReadBuffer(int) error }); ok {
		return s.SetReadBuffer(n)
	}
	return post.ErrNotSupported
}

// SetWriteBuffer sets the underlying socket's send buffer, if it has one.
func (c *PacketConn) SetWriteBuffer(n int) error {
	if s, ok := c.c.(interface{ SetWriteBuffer(int) error }); ok {
		return s.SetWriteBuffer(n)
	}
	return post.ErrNotSupported
}

// SetBlackhole switches dropping of everything, in both directions.
// Packets already in flight are dropped too.
func (c *PacketConn) SetBlackhole(on bool) {
	c.out.blackhole.Store(on)
	if c.in != nil {
		c.in.blackhole.Store(on)
	} else {
		c.inBlackhole.Store(on)
	}
}

// SetConfig replaces the outbound impairments, Blackhole included.
// Packets already scheduled keep their release times.
func (c *PacketConn) SetConfig(out Config) { c.out.setConfig(out) }

// SetInboundConfig replaces the inbound impairments of a duplex
// PacketConn. Otherwise only Blackhole is honoured, and other impairments
// return an error wrapping post.ErrNotSupported.
func (c *PacketConn) SetInboundConfig(in Config) error {
	if c.in != nil {
		c.in.setConfig(in)
		return nil
	}
	c.inBlackhole.Store(in.Blackhole)
	in.Blackhole, in.Seed = false, 0
	if in != (Config{}) {
		return post.Errorf(post.ErrNotSupported, "netem: inbound impairments need NewDuplex")
	}
	return nil
}

// Config returns the outbound impairments.
func (c *PacketConn) Config() Config { return c.out.config() }

// ring is a FIFO of received packets that reuses its storage.
type ring struct {
	buf  []rxPacket
	head int
	n    int
}

func (r *ring) len() int { return r.n }

func (r *ring) push(p rxPacket) {
	if r.n == len(r.buf) {
		buf := make([]rxPacket, max(16, 2*len(r.buf)))
		for i := range r.n {
			buf[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = buf, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = p
	r.n++
}

func (r *ring) pop() rxPacket {
	p := r.buf[r.head]
	r.buf[r.head] = rxPacket{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return p
}

// Stats returns the outbound counters.
func (c *PacketConn) Stats() Stats { return c.out.stats.snapshot() }

// InboundStats returns the inbound counters.
func (c *PacketConn) InboundStats() Stats {
	if c.in != nil {
		return c.in.stats.snapshot()
	}
	return c.inStats.snapshot()
}

var _ net.PacketConn = (*PacketConn)(nil)

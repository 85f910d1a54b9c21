package attack

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Observer is the victim's socket as seen by an attacker on the side of
// its path with a faster path of its own (RFC 9000 §9.3.3): every datagram
// the victim sends is also sent at once from the attacker's socket, and
// what the server sends to the attacker is relayed to the victim until
// StopRelay, then dropped. Copying starts with StartCopy. The victim uses the Observer as its socket; its
// own datagrams go out through Slow, which should be delayed.
type Observer struct {
	Slow net.PacketConn // the victim's real, slower path
	Spy  *net.UDPConn   // the attacker's socket
	// Copied counts datagrams copied, Dropped those dropped once the
	// relay stopped.
	Copied, Dropped atomic.Int64

	relay atomic.Bool
	copy  atomic.Bool
	in    chan rx
	done  chan struct{}
	once  sync.Once
}

type rx struct {
	b    []byte
	addr net.Addr
}

// NewObserver starts relaying.
func NewObserver(slow net.PacketConn, spy *net.UDPConn) *Observer {
	o := &Observer{Slow: slow, Spy: spy, in: make(chan rx, 1024), done: make(chan struct{})}
	o.relay.Store(true)
	go o.read(slow, nil)
	go o.read(spy, &o.relay)
	return o
}

func (o *Observer) read(pc net.PacketConn, relay *atomic.Bool) {
	for {
		buf := make([]byte, 2048)
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		if relay != nil && !relay.Load() {
			o.Dropped.Add(1)
			continue
		}
		select {
		case o.in <- rx{buf[:n], addr}:
		case <-o.done:
			return
		}
	}
}

// StartCopy starts copying the victim's datagrams.
func (o *Observer) StartCopy() { o.copy.Store(true) }

// StopRelay makes the attacker drop what the server sends it.
func (o *Observer) StopRelay() { o.relay.Store(false) }

// ReadFrom returns the next datagram for the victim.
func (o *Observer) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-o.in:
		return copy(b, p.b), p.addr, nil
	case <-o.done:
		return 0, nil, net.ErrClosed
	}
}

// WriteTo sends b on the slow path and a copy from the attacker.
func (o *Observer) WriteTo(b []byte, addr net.Addr) (int, error) {
	if o.copy.Load() {
		if _, err := o.Spy.WriteTo(b, addr); err == nil {
			o.Copied.Add(1)
		}
	}
	return o.Slow.WriteTo(b, addr)
}

// Close closes both sockets.
func (o *Observer) Close() error {
	o.once.Do(func() { close(o.done) })
	o.Spy.Close()
	return o.Slow.Close()
}

func (o *Observer) LocalAddr() net.Addr                { return o.Slow.LocalAddr() }
func (o *Observer) SetDeadline(t time.Time) error      { return nil }
func (o *Observer) SetReadDeadline(t time.Time) error  { return nil }
func (o *Observer) SetWriteDeadline(t time.Time) error { return nil }

// Package sockio moves batches of UDP datagrams between the FSP stack and a
// socket with as few system calls and allocations as the platform allows.
//
// On Linux, New wraps a *net.UDPConn with recvmmsg and sendmmsg, and uses
// UDP generic segmentation offload (UDP_SEGMENT) to send runs of
// equal-sized packets to one address as a single message when the kernel
// supports it. It also turns on UDP generic receive offload (UDP_GRO), so
// that the kernel may deliver a run of datagrams of one flow, such as a GSO
// message over loopback, as one message; ReadBatch splits it again and
// returns one Packet per datagram, keeping what does not fit the caller's
// slice for the next call. Any other net.PacketConn, such as a network
// emulator in tests, is driven one datagram at a time through ReadFrom and
// WriteTo.
//
// The Linux path issues the system calls through golang.org/x/sys/unix
// rather than golang.org/x/net/ipv4's ReadBatch, because the latter
// allocates a *net.UDPAddr for every datagram received. Neither ReadBatch
// nor WriteBatch allocates on that path, except to name the zone of a
// link-local IPv6 address.
//
// The system call state and the receive space (with GRO, slots of 64 KiB,
// since the kernel drops the tail of a coalesced message that does not
// fit) come from pools shared by all sockets. A reader holds them only
// while it has datagrams in hand and gives them back before it waits on
// an empty socket, so an idle socket holds no buffer; it starts each busy
// spell with 144 KiB (16 datagrams of LendSize) and takes 576 KiB while
// a burst keeps filling that.
// LendBatch hands datagrams out as slices of that space instead of
// copying them.
//
// A Conn keeps its read state between calls: at most one goroutine may
// call ReadBatch or LendBatch at a time. WriteBatch may be called from
// many goroutines at once, each call with state of its own; on Linux
// their system calls run in parallel unless the socket buffer is full.
// Close may be called from any goroutine and unblocks a pending
// ReadBatch.
package sockio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/postsockets/postsockets/post"
)

// Packet is one datagram. For ReadBatch, Buf's capacity is the space to
// read into, and ReadBatch sets N to the length read and Addr to the
// sender; a datagram longer than the space is truncated, as with ReadFrom.
// For WriteBatch, Buf[:N] is sent to Addr.
type Packet struct {
	Buf  []byte
	N    int
	Addr netip.AddrPort
	// Dst is the local address the datagram was sent to, when the
	// platform tells (IP_PKTINFO on Linux): on a socket bound to the
	// unspecified address it says which of the host's addresses the peer
	// reaches. ReadBatch and LendBatch only; WriteBatch ignores it.
	Dst netip.Addr
}

// LendSize is the most of a datagram LendBatch hands out; longer ones are
// cut to it, as ReadBatch cuts them to a Packet's capacity. It holds a
// datagram of a 9,000-byte (jumbo) MTU with room to spare.
const LendSize = 9216

// Conn reads and writes batches of datagrams.
type Conn interface {
	// ReadBatch blocks until at least one datagram arrives, then fills up
	// to min(len(pkts), MaxBatch()) packets and returns how many. Sender
	// addresses are IPv4 when the datagram came over IPv4, even on a
	// dual-stack socket.
	ReadBatch(pkts []Packet) (int, error)
	// LendBatch is ReadBatch into the Conn's own space: it ignores each
	// Packet's Buf on entry and sets it to the datagram, at most LendSize
	// bytes, in memory that stays valid only until the next LendBatch or
	// ReadBatch call.
	LendBatch(pkts []Packet) (int, error)
	// Keep lets the caller keep datagrams that the last LendBatch lent
	// past the next read: it returns the Hold of their space, to which
	// the caller adds a share for each datagram kept before it reads
	// again, and releases each share when done. The next read then uses
	// other space. Keep returns nil, and the caller must copy what it
	// keeps, when the Conn already holds as much kept space as it allows
	// or lends from a single buffer.
	Keep() *Hold
	// WriteBatch sends every packet, in order, and returns how many were
	// handed to the kernel before an error, if any.
	WriteBatch(pkts []Packet) (int, error)
	// LocalAddr returns the socket's local address.
	LocalAddr() netip.AddrPort
	// Close closes the underlying socket, unblocking ReadBatch.
	Close() error
	// MaxBatch is the most datagrams one system call moves: size read
	// slices to it. WriteBatch accepts any number and splits them.
	MaxBatch() int
}

// New returns a Conn that reads and writes pc and owns it: closing the Conn
// closes pc. A *net.UDPConn on Linux gets the batched path; any other
// PacketConn is used one datagram per call and must accept *net.UDPAddr
// destinations in WriteTo; if it also has the ReadFromUDPAddrPort and
// WriteToUDPAddrPort methods of *net.UDPConn, those are used instead and
// save the net.Addr allocations.
func New(pc net.PacketConn) Conn {
	if u, ok := pc.(*net.UDPConn); ok {
		if c := newBatchConn(u); c != nil {
			return c
		}
	}
	c := &loopConn{pc: pc}
	c.ap, _ = pc.(addrPortConn)
	return c
}

// addrPortConn is the allocation-free part of *net.UDPConn's API.
type addrPortConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

// loopConn moves one datagram per system call.
type loopConn struct {
	pc   net.PacketConn
	ap   addrPortConn // pc, if it has the methods; nil otherwise
	lend []byte       // LendSize bytes, allocated by the first LendBatch
}

func (c *loopConn) MaxBatch() int             { return 1 }
func (c *loopConn) Close() error              { return c.pc.Close() }
func (c *loopConn) LocalAddr() netip.AddrPort { return addrPortOf(c.pc.LocalAddr()) }

func (c *loopConn) ReadBatch(pkts []Packet) (int, error) {
	if len(pkts) == 0 {
		return 0, nil
	}
	p := &pkts[0]
	b := p.Buf[:cap(p.Buf)]
	var (
		n   int
		ap  netip.AddrPort
		err error
	)
	if c.ap != nil {
		n, ap, err = c.ap.ReadFromUDPAddrPort(b)
	} else {
		var addr net.Addr
		n, addr, err = c.pc.ReadFrom(b)
		ap = addrPortOf(addr)
	}
	if err != nil {
		return 0, opError("read", err)
	}
	p.N = n
	p.Addr = unmap(ap)
	return 1, nil
}

func (c *loopConn) LendBatch(pkts []Packet) (int, error) {
	if len(pkts) == 0 {
		return 0, nil
	}
	if c.lend == nil {
		c.lend = make([]byte, LendSize)
	}
	p := &pkts[0]
	p.Buf = c.lend
	n, err := c.ReadBatch(pkts[:1])
	if err != nil {
		p.Buf = nil
		return 0, err
	}
	p.Buf = c.lend[:p.N:p.N]
	return n, nil
}

// Keep returns nil: a loopConn lends one small buffer, cheaper to copy.
func (c *loopConn) Keep() *Hold { return nil }

func (c *loopConn) WriteBatch(pkts []Packet) (int, error) {
	for i := range pkts {
		p := &pkts[i]
		if err := checkPacket(p); err != nil {
			return i, err
		}
		var err error
		if c.ap != nil {
			_, err = c.ap.WriteToUDPAddrPort(p.Buf[:p.N], p.Addr)
		} else {
			_, err = c.pc.WriteTo(p.Buf[:p.N], net.UDPAddrFromAddrPort(p.Addr))
		}
		if err != nil {
			return i, opError("write", err)
		}
	}
	return len(pkts), nil
}

// checkPacket rejects packets that cannot be sent: the kernel refuses port
// zero, and N must fit in Buf.
func checkPacket(p *Packet) error {
	if p.N < 0 || p.N > cap(p.Buf) {
		return fmt.Errorf("sockio: packet length %d outside buffer of %d bytes", p.N, cap(p.Buf))
	}
	if !p.Addr.IsValid() || p.Addr.Port() == 0 {
		return fmt.Errorf("sockio: invalid destination %v", p.Addr)
	}
	return nil
}

// opError wraps a socket error so that errors.Is finds the post sentinel
// as well as the net or os error.
func opError(op string, err error) error {
	switch {
	case errors.Is(err, net.ErrClosed):
		return fmt.Errorf("sockio: %s: %w: %w", op, post.ErrClosed, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("sockio: %s: %w: %w", op, post.ErrTimeout, err)
	}
	return fmt.Errorf("sockio: %s: %w", op, err)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

// addrPortOf converts a net.Addr to an unmapped AddrPort, or returns the
// zero AddrPort if it has no IP address and port.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return unmap(a.AddrPort())
	case nil:
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return unmap(ap)
}

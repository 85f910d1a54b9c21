//go:build linux

package sockio

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/postsockets/postsockets/post"
)

const (
	// batchSize is the most datagrams one recvmmsg or sendmmsg moves.
	batchSize = 64
	// maxGSOSegments is the most segments in one GSO message; the kernel's
	// UDP_MAX_SEGMENTS is at least this.
	maxGSOSegments = 64
	// maxGSOBytes bounds a GSO message's payload by what fits one IPv4
	// datagram, the smaller of the two families.
	maxGSOBytes = 65535 - 20 - 8

	// groSlots is the most messages one recvmmsg reads when UDP GRO is on.
	// Every message needs a slot of groSlotSize bytes, since the kernel
	// truncates, and so loses the tail of, a coalesced datagram longer than
	// the space given; a slot usually carries dozens of datagrams.
	groSlots = 8
	// groSlotSize holds the largest UDP payload of either family.
	groSlotSize = 65535
	// groOOBSpace is the control space per message: room for the UDP_GRO
	// message (an int), the packet information (in6_pktinfo) and a little
	// to spare for any other.
	groOOBSpace = 128
	// pktinfoSpace is the control space per message without GRO.
	pktinfoSpace = 64
)

var gsoSpace = unix.CmsgSpace(2)

// A reader starts each busy spell with a small read state, one GRO slot
// or smallMsgs messages, and takes a full one (groSlots slots, batchSize
// messages) once two system calls in a row filled the small one.
const smallMsgs = 16

// batchConn is the Linux recvmmsg/sendmmsg Conn.
//
// Its system call state and receive space are not its own: the reader
// takes them from a pool when a read finds datagrams and gives them back
// when the socket has nothing more, before it waits; the writer takes its
// state from writePool for each WriteBatch. A socket that waits for
// datagrams thus holds no buffer, however many it has received before.
type batchConn struct {
	pc    *net.UDPConn
	rc    syscall.RawConn
	v6    bool // AF_INET6 socket, possibly dual-stack
	local netip.AddrPort

	// Owned by the reader.
	rs     *readState    // held while datagrams are in hand; nil while idle
	kept   bool          // the caller keeps datagrams of rs: read into other space next
	spaces atomic.Int32  // kept spaces not yet released (at most maxKept)
	keeps  atomic.Uint64 // spaces ever kept, for tests
	ask    int           // messages the caller has room for
	rn     int           // messages asked for in this system call
	full   int           // system calls in a row that rs was too small for
	rlend  bool          // read into lent space rather than rpkts
	rpkts  []Packet      // the caller's packets during a read into them
	recvFn func(fd uintptr) bool
	gro    bool // UDP_GRO is on: read through g
	g      groState
	groMsg uint64 // coalesced messages received, for tests

	// Shared by the writers, each with its own mmsg from writePool.
	gso      atomic.Bool   // send runs of packets as one UDP_SEGMENT message
	gsoOK    atomic.Bool   // a GSO send has succeeded, so GSO itself works
	gsoSends atomic.Uint64 // GSO messages sent, for tests
}

// mmsg is the reusable state of one direction's system calls.
type mmsg struct {
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte // UDP_SEGMENT control messages, gsoSpace per message
	npkts []int  // packets carried by each message

	n     int // messages passed to the system call
	done  int // messages the system call moved
	errno syscall.Errno

	sendFn func(fd uintptr) bool
	tryFn  func(fd uintptr) // send once; EAGAIN in errno if the buffer is full
}

func newMmsg(n int) *mmsg {
	m := &mmsg{
		hs:    make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		oob:   make([]byte, n*gsoSpace),
		npkts: make([]int, n),
	}
	m.sendFn = m.send
	m.tryFn = m.try
	return m
}

// try sends once, leaving EAGAIN in m.errno if the socket buffer is full.
func (m *mmsg) try(fd uintptr) {
	if !m.send(fd) {
		m.errno = unix.EAGAIN
	}
}

// readState is the reader's system call state and receive space: slots
// GRO slots, or msgs messages of at most LendSize bytes when lent.
type readState struct {
	h     Hold // the reader's share and those of kept datagrams
	m     *mmsg
	buf   []byte
	oob   []byte // control space: groOOBSpace per GRO slot, or pktinfoSpace per message
	slots int
	msgs  int
}

func newReadState(slots, msgs int) *readState {
	rs := &readState{
		m:     newMmsg(msgs),
		buf:   make([]byte, max(slots*groSlotSize, msgs*LendSize)),
		oob:   make([]byte, max(slots*groOOBSpace, msgs*pktinfoSpace)),
		slots: slots,
		msgs:  msgs,
	}
	pool := &readPool
	if msgs < batchSize {
		pool = &smallReadPool
	}
	rs.h.free = func() {
		if poisonFreed && len(rs.buf) > 0 {
			// Doubling copies: the race detector checks each as one
			// range, where a byte loop cost it a call a byte (a
			// thousand-clone burst ran 5 times slower under -race).
			rs.buf[0] = 0xdb
			for n := 1; n < len(rs.buf); n *= 2 {
				copy(rs.buf[n:], rs.buf[:n])
			}
		}
		pool.Put(rs)
	}
	return rs
}

// maxKept bounds the receive spaces a socket's kept datagrams hold at
// once, besides the one it reads into: 16 full ones are 8 MiB. Past it,
// Keep returns nil and the caller copies, so datagrams held by a slow
// consumer cannot take the whole pool.
const maxKept = 16

// KeptSpaces returns how many receive spaces the caller ever kept and how
// many it still holds, for tests.
func (c *batchConn) KeptSpaces() (ever uint64, held int) {
	return c.keeps.Load(), int(c.spaces.Load())
}

func (c *batchConn) Keep() *Hold {
	rs := c.rs
	if rs == nil {
		return nil
	}
	if !c.kept {
		if c.spaces.Load() >= maxKept {
			return nil
		}
		c.kept = true
		c.spaces.Add(1)
		c.keeps.Add(1)
		rs.h.owner.Store(&c.spaces)
	}
	return &rs.h
}

// limit is the most messages one system call may read into rs.
func (rs *readState) limit(gro bool) int {
	if gro {
		return rs.slots
	}
	return rs.msgs
}

// The pools of system call state and receive space, shared by every
// socket, as x/net shares its message buffers: small read states (144
// KiB), full ones (576 KiB) and writer states.
var (
	smallReadPool, readPool sync.Pool // made in init: a read state frees itself to them
	writePool               = sync.Pool{New: func() any { return newMmsg(batchSize) }}
)

func init() {
	smallReadPool.New = func() any { return newReadState(1, smallMsgs) }
	readPool.New = func() any { return newReadState(groSlots, batchSize) }
}

func newBatchConn(pc *net.UDPConn) Conn {
	rc, err := pc.SyscallConn()
	if err != nil {
		return nil
	}
	var domain int
	var gso, gro bool
	err = rc.Control(func(fd uintptr) {
		domain, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		_, gsoErr := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		gso = gsoErr == nil
		// Kernels before 5.0 refuse UDP_GRO; they then segment any
		// coalesced datagram before queueing it, as for every socket
		// without the option.
		gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		// The local address each datagram came to (Packet.Dst). An
		// IPv6 socket reports IPv4 datagrams as mapped addresses.
		if domain == unix.AF_INET6 {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err != nil || (domain != unix.AF_INET && domain != unix.AF_INET6) {
		return nil
	}
	c := &batchConn{
		pc:    pc,
		rc:    rc,
		v6:    domain == unix.AF_INET6,
		local: addrPortOf(pc.LocalAddr()),
		gro:   gro,
	}
	c.gso.Store(gso)
	c.recvFn = c.recv
	return c
}

func (c *batchConn) MaxBatch() int             { return batchSize }
func (c *batchConn) Close() error              { return c.pc.Close() }
func (c *batchConn) LocalAddr() netip.AddrPort { return c.local }

// recv is the reader's system call, run by rc.Read. It takes a read
// state from a pool if it holds none, a full one in place of a small one
// that keeps filling, and, when the socket is empty, gives it back before
// rc.Read waits.
func (c *batchConn) recv(fd uintptr) bool {
	if c.rs != nil && (c.kept || c.rs.msgs < batchSize && c.full >= 2) {
		c.release() // kept by the caller, or too small
	}
	if c.rs == nil {
		if c.full >= 2 {
			c.rs = readPool.Get().(*readState)
		} else {
			c.rs = smallReadPool.Get().(*readState)
		}
		c.rs.h.refs.Store(1) // the reader's share
		c.g.buf = c.rs.buf
	}
	c.rn = min(c.ask, c.rs.limit(c.gro))
	c.setupRecv()
	m := c.rs.m
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hs[0])), uintptr(c.rn), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			c.full = 0
			c.release()
			return false // wait until readable
		case 0:
			m.done, m.errno = int(r), 0
			if m.done == c.rn && c.rn < c.ask {
				c.full++ // the read state, not the caller, was the limit
			} else {
				c.full = 0
			}
		default:
			m.done, m.errno = 0, e
		}
		return true
	}
}

// setupRecv points the first rn messages at the receive space: GRO slots,
// lent slots or the caller's packets.
func (c *batchConn) setupRecv() {
	rs := c.rs
	m := rs.m
	for i := range c.rn {
		iov := &m.iovs[i]
		switch {
		case c.gro:
			setIovec(iov, rs.buf[i*groSlotSize:(i+1)*groSlotSize])
		case c.rlend:
			setIovec(iov, rs.buf[i*LendSize:(i+1)*LendSize])
		default:
			b := c.rpkts[i].Buf
			setIovec(iov, b[:cap(b)])
		}
		h := &m.hs[i]
		h.Len = 0
		h.Hdr = unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&m.names[i])),
			Namelen: unix.SizeofSockaddrInet6,
			Iov:     iov,
		}
		h.Hdr.SetIovlen(1)
		if c.gro {
			h.Hdr.Control = &rs.oob[i*groOOBSpace]
			h.Hdr.SetControllen(groOOBSpace)
		} else {
			h.Hdr.Control = &rs.oob[i*pktinfoSpace]
			h.Hdr.SetControllen(pktinfoSpace)
		}
	}
}

// release gives up the reader's share of the read state, which goes back
// to its pool unless the caller keeps datagrams in it. The reader must
// have handed out every datagram in it.
func (c *batchConn) release() {
	rs := c.rs
	if rs == nil {
		return
	}
	c.forgetCaller()
	c.rs, c.g.buf, c.kept = nil, nil, false
	rs.h.Release(1)
}

// forgetCaller drops the pointers to the caller's buffers, so that the
// read state does not keep them alive.
func (c *batchConn) forgetCaller() {
	if c.rs != nil && !c.gro && !c.rlend {
		for i := range c.rn {
			c.rs.m.iovs[i].Base = nil
		}
	}
}

func (c *batchConn) ReadBatch(pkts []Packet) (int, error) { return c.read(pkts, false) }
func (c *batchConn) LendBatch(pkts []Packet) (int, error) { return c.read(pkts, true) }

func (c *batchConn) read(pkts []Packet, lend bool) (int, error) {
	n := min(len(pkts), batchSize)
	if n == 0 {
		return 0, nil
	}
	if lend {
		// The last datagrams lent must not keep the space alive once it
		// goes back to the pool.
		for i := range pkts[:n] {
			pkts[i].Buf = nil
		}
	}
	if c.gro {
		return c.readGRO(pkts[:n], lend)
	}
	c.ask, c.rlend, c.rpkts = n, lend, pkts
	err := c.rc.Read(c.recvFn)
	c.forgetCaller()
	c.rpkts = nil
	if err != nil {
		return 0, opError("read", err)
	}
	m := c.rs.m
	if m.errno != 0 {
		return 0, opError("read", os.NewSyscallError("recvmmsg", m.errno))
	}
	for i := range m.done {
		p := &pkts[i]
		p.N = int(m.hs[i].Len)
		if lend {
			off := i * LendSize
			p.Buf = c.rs.buf[off : off+p.N : off+p.N]
		}
		p.Addr = parseSockaddr(&m.names[i])
		oob := c.rs.oob[i*pktinfoSpace : (i+1)*pktinfoSpace]
		_, p.Dst = parseCmsgs(oob[:min(int(m.hs[i].Hdr.Controllen), len(oob))])
	}
	return m.done, nil
}

func (m *mmsg) send(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.hs[0])), uintptr(m.n), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until writable
		case 0:
			m.done, m.errno = int(r), 0
		default:
			m.done, m.errno = 0, e
		}
		return true
	}
}

func (c *batchConn) WriteBatch(pkts []Packet) (int, error) {
	m := writePool.Get().(*mmsg)
	defer writePool.Put(m)
	sent := 0
	for sent < len(pkts) {
		n, err := c.writeSome(m, pkts[sent:], c.gso.Load())
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// writeSome sends up to one system call's worth of pkts and returns how
// many packets went out.
func (c *batchConn) writeSome(m *mmsg, pkts []Packet, gso bool) (int, error) {
	n, err := c.pack(m, pkts, gso)
	if n == 0 {
		return 0, err
	}
	m.n = n
	// Try without the descriptor's write lock first, so that writers
	// of different connections send at once; wait for room under it
	// only when the socket buffer is full.
	err = c.rc.Control(m.tryFn)
	if err == nil && m.errno == unix.EAGAIN {
		err = c.rc.Write(m.sendFn)
	}
	for i := range m.iovs {
		m.iovs[i].Base = nil
	}
	if err != nil {
		return 0, opError("write", err)
	}
	if m.errno != 0 {
		if m.npkts[0] > 1 && (m.errno == unix.EIO || m.errno == unix.EINVAL) {
			return c.gsoFailed(m, pkts[:m.npkts[0]], m.errno)
		}
		return 0, opError("write", os.NewSyscallError("sendmmsg", m.errno))
	}
	sent := 0
	for _, k := range m.npkts[:m.done] {
		sent += k
		if k > 1 {
			c.gsoOK.Store(true)
			c.gsoSends.Add(1)
		}
	}
	return sent, nil
}

// gsoFailed resends the packets of a GSO message the kernel refused, one
// datagram each. If that works and GSO never has, the kernel or device
// cannot do it, and it is turned off for good.
func (c *batchConn) gsoFailed(m *mmsg, pkts []Packet, errno syscall.Errno) (int, error) {
	sent := 0
	for sent < len(pkts) {
		n, err := c.writeSome(m, pkts[sent:], false)
		sent += n
		if err != nil {
			return sent, err
		}
	}
	if !c.gsoOK.Load() && c.gso.Swap(false) {
		slog.Debug("sockio: UDP GSO unavailable, sending one datagram per packet",
			"local", c.local, "err", errno)
	}
	return sent, nil
}

// pack fills the writer's messages from the head of pkts, coalescing runs
// of equal-sized packets to one address into GSO messages when gso is set,
// and returns the number of messages. It stops before a packet that cannot
// be sent, and returns its error only when that packet is the first.
func (c *batchConn) pack(m *mmsg, pkts []Packet, gso bool) (int, error) {
	nmsg, iv, i := 0, 0, 0
	for i < len(pkts) && iv < batchSize {
		p := &pkts[i]
		if err := checkPacket(p); err != nil {
			if nmsg == 0 {
				return 0, err
			}
			break
		}
		namelen, err := c.putSockaddr(&m.names[nmsg], p.Addr)
		if err != nil {
			if nmsg == 0 {
				return 0, err
			}
			break
		}
		first := iv
		setIovec(&m.iovs[iv], p.Buf[:p.N])
		iv++
		segs, size, total := 1, p.N, p.N
		for gso && size > 0 && i+segs < len(pkts) && iv < batchSize && segs < maxGSOSegments {
			q := &pkts[i+segs]
			if q.Addr != p.Addr || q.N <= 0 || q.N > size || q.N > cap(q.Buf) || total+q.N > maxGSOBytes {
				break
			}
			setIovec(&m.iovs[iv], q.Buf[:q.N])
			iv++
			segs++
			total += q.N
			if q.N < size {
				break // only the last segment may be short
			}
		}
		h := &m.hs[nmsg]
		h.Len = 0
		h.Hdr = unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&m.names[nmsg])),
			Namelen: namelen,
			Iov:     &m.iovs[first],
		}
		h.Hdr.SetIovlen(segs)
		if segs > 1 {
			oob := m.oob[nmsg*gsoSpace : (nmsg+1)*gsoSpace]
			clear(oob)
			cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			cm.Level = unix.IPPROTO_UDP
			cm.Type = unix.UDP_SEGMENT
			cm.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
			h.Hdr.Control = &oob[0]
			h.Hdr.SetControllen(len(oob))
		}
		m.npkts[nmsg] = segs
		nmsg++
		i += segs
	}
	return nmsg, nil
}

func setIovec(iov *unix.Iovec, b []byte) {
	iov.Base = nil
	if len(b) > 0 {
		iov.Base = &b[0]
	}
	iov.SetLen(len(b))
}

// putSockaddr writes ap as a sockaddr of the socket's family and returns
// its length. IPv4 addresses are mapped on IPv6 sockets.
func (c *batchConn) putSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) (uint32, error) {
	a := ap.Addr()
	if c.v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
		putPort(&sa.Port, ap.Port())
		if z := a.Zone(); z != "" {
			sa.Scope_id = zoneIndex(z)
		}
		return unix.SizeofSockaddrInet6, nil
	}
	a = a.Unmap()
	if !a.Is4() {
		return 0, fmt.Errorf("sockio: IPv6 destination %v on an IPv4 socket: %w", ap, post.ErrNotSupported)
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
	putPort(&sa4.Port, ap.Port())
	return unix.SizeofSockaddrInet4, nil
}

// parseSockaddr decodes a sockaddr the kernel filled in. Unknown families
// give the zero AddrPort.
func parseSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			a = a.WithZone(zoneName(sa.Scope_id))
		}
		return netip.AddrPortFrom(a, getPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// The sockaddr port fields hold the port in network byte order.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	binary.BigEndian.PutUint16(b[:], port)
}

func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return binary.BigEndian.Uint16(b[:])
}

func zoneIndex(zone string) uint32 {
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	n, _ := strconv.ParseUint(zone, 10, 32)
	return uint32(n)
}

func zoneName(index uint32) string {
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(index), 10)
}

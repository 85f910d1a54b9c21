//go:build linux

package sockio

import (
	"encoding/binary"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP generic receive offload
//
// With UDP_GRO set, the kernel may hand the socket several datagrams of one
// flow as a single message: the payloads back to back, all but the last of
// the size given in a UDP_GRO control message. Over loopback, a message
// sent with UDP_SEGMENT arrives whole this way instead of being segmented
// on receive, so one copy to user space moves dozens of datagrams.
//
// The reader receives into groSlots slots of its read state, each large
// enough for any coalesced message, and hands each segment out in the
// next Packet of the caller: copied by ReadBatch, lent by LendBatch.
// Segments that do not fit the caller's batch stay in the slots and are
// returned by the next call before any new system call.

// groState is what the reader keeps between calls while GRO is on.
type groState struct {
	buf   []byte // the receive space of the read state, while held
	lens  [groSlots]int
	segs  [groSlots]int // segment size; 0 if the message is one datagram
	addrs [groSlots]netip.AddrPort
	dsts  [groSlots]netip.Addr

	msgs int // messages in the buffers
	cur  int // message being handed out
	off  int // bytes of message cur already handed out
}

// readGRO fills pkts from segments left over from the last call or, if
// there are none, from one recvmmsg. It does not top a short remainder up
// with a non-blocking recvmmsg: measured with FSP bulk transfer, that
// extra system call bought nothing.
func (c *batchConn) readGRO(pkts []Packet, lend bool) (int, error) {
	g := &c.g
	if g.cur < g.msgs {
		return g.drain(pkts, lend), nil
	}
	c.ask, c.rlend = len(pkts), lend
	if err := c.rc.Read(c.recvFn); err != nil {
		return 0, opError("read", err)
	}
	m := c.rs.m
	if m.errno != 0 {
		return 0, opError("read", os.NewSyscallError("recvmmsg", m.errno))
	}
	for i := range m.done {
		h := &m.hs[i]
		g.lens[i] = min(int(h.Len), groSlotSize)
		oob := c.rs.oob[i*groOOBSpace : (i+1)*groOOBSpace]
		g.segs[i], g.dsts[i] = parseCmsgs(oob[:min(int(h.Hdr.Controllen), len(oob))])
		if g.segs[i] > 0 && g.segs[i] < g.lens[i] {
			c.groMsg++
		}
		g.addrs[i] = parseSockaddr(&m.names[i])
	}
	g.msgs, g.cur, g.off = m.done, 0, 0
	return g.drain(pkts, lend), nil
}

// drain hands buffered datagrams out in pkts, in order, and returns how
// many: copied to each Packet's space, cut to its capacity, or with lend,
// as slices of the receive space of at most LendSize bytes.
func (g *groState) drain(pkts []Packet, lend bool) int {
	k := 0
	for k < len(pkts) && g.cur < g.msgs {
		i := g.cur
		total, seg := g.lens[i], g.segs[i]
		if seg <= 0 || seg > total {
			seg = total
		}
		msg := g.buf[i*groSlotSize : i*groSlotSize+total]
		for k < len(pkts) {
			end := min(g.off+seg, total)
			p := &pkts[k]
			if lend {
				e := min(end, g.off+LendSize)
				p.Buf, p.N = msg[g.off:e:e], e-g.off
			} else {
				p.N = copy(p.Buf[:cap(p.Buf)], msg[g.off:end])
			}
			p.Addr, p.Dst = g.addrs[i], g.dsts[i]
			k++
			g.off = end
			if end == total {
				break
			}
		}
		if g.off == total {
			g.cur++
			g.off = 0
		}
	}
	if g.cur == g.msgs {
		g.cur, g.msgs = 0, 0
	}
	return k
}

// The layout of struct cmsghdr: a size_t length, then level and type.
const (
	cmsgHdrLen = unix.SizeofCmsghdr
	cmsgLenLen = int(unsafe.Sizeof(unix.Cmsghdr{}.Len))
)

// groSegmentSize returns the segment size of a UDP_GRO control message in
// oob, the control data of one received message, or 0 if there is none or
// it is malformed.
func groSegmentSize(oob []byte) int {
	seg, _ := parseCmsgs(oob)
	return seg
}

// parseCmsgs returns what the control data of one received message says:
// the UDP_GRO segment size (0 if none) and the local address of the
// packet information (invalid if none). Malformed data ends the walk.
func parseCmsgs(oob []byte) (seg int, dst netip.Addr) {
	for len(oob) >= cmsgHdrLen {
		var l uint64
		if cmsgLenLen == 8 {
			l = binary.NativeEndian.Uint64(oob)
		} else {
			l = uint64(binary.NativeEndian.Uint32(oob))
		}
		if l < uint64(unix.CmsgLen(0)) || l > uint64(len(oob)) {
			return seg, dst
		}
		level := int32(binary.NativeEndian.Uint32(oob[cmsgLenLen:]))
		typ := int32(binary.NativeEndian.Uint32(oob[cmsgLenLen+4:]))
		data := oob[unix.CmsgLen(0):l]
		switch {
		case level == unix.IPPROTO_UDP && typ == unix.UDP_GRO:
			switch {
			case len(data) >= 4:
				seg = max(int(int32(binary.NativeEndian.Uint32(data))), 0)
			case len(data) >= 2:
				seg = int(binary.NativeEndian.Uint16(data))
			}
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex, spec_dst, addr (the header's
			// destination).
			dst = netip.AddrFrom4([4]byte(data[8:12]))
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo: addr, ifindex.
			dst = netip.AddrFrom16([16]byte(data[:16])).Unmap()
		}
		next := unix.CmsgSpace(int(l) - unix.CmsgLen(0))
		if next >= len(oob) {
			return seg, dst
		}
		oob = oob[next:]
	}
	return seg, dst
}

// setGRO turns UDP_GRO on or off, for tests.
func (c *batchConn) setGRO(on bool) error {
	v := 0
	if on {
		v = 1
	}
	var serr error
	err := c.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, v)
	})
	if err == nil {
		err = serr
	}
	if err == nil || !on {
		// A kernel that refuses the option never coalesces.
		c.gro = on
	}
	return err
}

package sockio

import (
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SetReadBuffer asks for a socket receive buffer of n bytes and returns
// the size the kernel granted (what SO_RCVBUF reports, which counts its
// own overhead too), or 0 if it could not tell. It tries SO_RCVBUFFORCE
// first, which may exceed net.core.rmem_max but needs CAP_NET_ADMIN, and
// falls back to SO_RCVBUF, which the kernel caps at rmem_max.
func SetReadBuffer(pc *net.UDPConn, n int) int {
	rc, err := pc.SyscallConn()
	if err != nil {
		return 0
	}
	got := 0
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
		got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return got
}

// Drops returns how many datagrams the kernel dropped for pc because its
// receive buffer was full, or 0 if it cannot tell. Unlike RcvbufErrors in
// /proc/net/snmp it counts this socket only.
func Drops(pc *net.UDPConn) uint64 {
	_, _, d := Backlog(pc)
	return d
}

// Backlog returns the bytes queued in pc's receive buffer (counted as the
// kernel charges them), the buffer's size and the datagrams dropped
// because it was full (SO_MEMINFO); zeros if the kernel cannot tell.
func Backlog(pc *net.UDPConn) (queued, size int, drops uint64) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return 0, 0, 0
	}
	var mi [unix.SK_MEMINFO_VARS]uint32
	rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(mi))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e == 0 && l >= uint32(unsafe.Sizeof(mi)) {
			queued, size = int(mi[unix.SK_MEMINFO_RMEM_ALLOC]), int(mi[unix.SK_MEMINFO_RCVBUF])
			drops = uint64(mi[unix.SK_MEMINFO_DROPS])
		}
	})
	return queued, size, drops
}

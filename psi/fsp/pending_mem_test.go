package fsp

import (
	"crypto/tls"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/postsockets/postsockets/internal/testcert"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// maxPendingEntryBytes bounds the heap one pending handshake holds: a
// connection that proved only its address (issue 10: state before a peer
// proves itself must be small). When an entry kept its ACK_CONNECT_REQ as
// packets (a 1,232-byte buffer per fragment) it held 6.2 KiB with the
// test certificate and 13.8 KiB with a 6 KB chain; 5.2 KiB either way
// since (affirm.go; the Conn itself is 2.7 KiB of it). The figure per
// entry varies a little with n, the maps' growth.
const maxPendingEntryBytes = 5888

// TestPendingEntrySize fills the pending table with answered, never
// confirmed handshakes from one address and measures the live heap each
// holds, with the test certificate (one fragment) and with a chain of
// about 6 KB (six fragments), which must cost no more.
func TestPendingEntrySize(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the pending table")
	}
	t.Run("one fragment", func(t *testing.T) {
		scfg, _ := pair(t)
		pendingEntrySize(t, scfg, 2048)
	})
	t.Run("long chain", func(t *testing.T) {
		scfg, _ := pair(t)
		chain, err := testcert.Must().LongChain(6000)
		if err != nil {
			t.Fatal(err)
		}
		scfg.Security.Certificates = []tls.Certificate{chain}
		pendingEntrySize(t, scfg, 1024)
	})
}

func pendingEntrySize(t *testing.T, scfg *Config, n int) {
	scfg.MaxPending, scfg.MaxPendingPerAddress, scfg.MaxPendingPerPrefix = n, n, n
	scfg.MaxConnsPerSource = n // pending handshakes count against it
	scfg.MaxHandshakeRate = 1 << 20
	scfg.HandshakeTimeout = time.Minute
	l := listen(t, scfg)
	f := newFlooder(t, netip.MustParseAddr("127.0.0.12"), l.Addr())
	tr := l.Transport()
	affirming := func() int {
		tr.mu.Lock()
		var cs []*Conn
		for _, c := range tr.pending.byKey {
			cs = append(cs, c)
		}
		tr.mu.Unlock()
		k := 0
		for _, c := range cs {
			c.mu.Lock()
			if c.state == stateAffirming {
				k++
			}
			c.mu.Unlock()
		}
		return k
	}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	kp, _ := fcrypto.NewKeyPair()
	buf := make([]byte, maxHandshakeSize)
	var pkt wire.Packet
	next := uint32(0x200000)
	deadline := time.Now().Add(20 * time.Second)
	// fill answers cookie exchanges, 16 at a time, until goal handshakes
	// are pending.
	fill := func(goal int) {
		for affirming() < goal {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d handshakes pending", affirming(), n)
			}
			for range min(16, goal-tr.PendingHandshakes()) {
				f.init(next)
				next++
			}
			for {
				f.pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				k, err := f.pc.Read(buf)
				if err != nil {
					break
				}
				if wire.Parse(buf[:k], &pkt) != nil || pkt.Opcode != wire.AckInitConnect {
					continue
				}
				req := wire.Packet{Header: wire.Header{Opcode: wire.ConnectRequest, Src: pkt.Dst},
					HasParam: true, Param: wire.ConnectParam{Window: 64}, EphemeralKey: kp.Public[:]}
				f.pc.WriteTo(handshakePacket(nil, fcrypto.HandshakeKey(nil, pkt.Dst), &req,
					append(append([]byte(nil), pkt.Payload[:fcrypto.CookieLen]...), floodNonce...)), f.to)
			}
		}
	}
	// The first entries pay for the listener's lazily made state (rate
	// limiter tables, the maps' first buckets): measure the ones after.
	fill(n / 16)
	warm := affirming()
	before := heap()
	fill(n)
	per := (int64(heap()) - int64(before)) / int64(affirming()-warm)
	t.Logf("%d pending handshakes, %d bytes of heap each (a full table of %d: %.1f MiB)", n, per, defaultMaxPending, float64(per*defaultMaxPending)/(1<<20))
	runtime.KeepAlive(buf)
	if per > maxPendingEntryBytes {
		t.Fatalf("a pending handshake holds %d bytes of heap, want at most %d", per, maxPendingEntryBytes)
	}
}

// connClass is the size class a Conn takes (runtime/sizeclasses.go):
// with the 8-byte header Go puts before a large object with pointers,
// 3,200 bytes. One field too many moves every connection, pending ones
// included, to the next class, 3,456 (2 December: 5,477 to 5,762 bytes
// per pending handshake).
const connClass = 3200

// TestConnSizeClass: Conn and its malloc header fit connClass.
func TestConnSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}) + 8; n > connClass {
		t.Fatalf("Conn takes %d bytes with its malloc header, past the %d-byte size class: the next is 3,456", n, connClass)
	}
}

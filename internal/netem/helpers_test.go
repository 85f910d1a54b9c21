package netem

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/leakcheck"
)

// checkLeaks fails the test if goroutines started during it outlive it.
func checkLeaks(t *testing.T) { leakcheck.Check(t) }

func listenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

// newPair returns an impaired sender and a plain receiver.
func newPair(t *testing.T, cfg Config) (*PacketConn, *net.UDPConn) {
	t.Helper()
	checkLeaks(t)
	s := New(listenUDP(t), cfg)
	t.Cleanup(func() { s.Close() })
	return s, listenUDP(t)
}

// guard bounds a blocking read so a broken test fails instead of hanging.
const guard = 10 * time.Second

func seqPacket(seq uint32, size int) []byte {
	b := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(b, seq)
	return b
}

// readN reads n packets and returns their sequence numbers.
func readN(t *testing.T, c net.PacketConn, n int) []uint32 {
	t.Helper()
	buf := make([]byte, largeBuf)
	seqs := make([]uint32, 0, n)
	c.SetReadDeadline(time.Now().Add(guard))
	defer c.SetReadDeadline(time.Time{})
	for len(seqs) < n {
		k, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d of %d packets: %v", len(seqs), n, err)
		}
		seqs = append(seqs, binary.BigEndian.Uint32(buf[:k]))
	}
	return seqs
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout() || err != nil && strings.Contains(err.Error(), "timeout")
}

// waitFor polls cond until it holds, failing the test after guard.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(guard); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

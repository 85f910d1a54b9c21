package ice

import (
	"context"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/pion/stun"
)

// TestStrangerGetsNoLargerReply: datagrams from an address that is not
// the peer's, to a connected agent's candidate, get no reply larger than
// themselves, and the connection stays up: STUN Binding requests with no
// integrity, with the agent's ufrag and a wrong password, and with a
// well-formed username of a stranger, then every first octet at sizes
// around STUN's header.
func TestStrangerGetsNoLargerReply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, ca, cb := connectPair(t, ctx)
	defer ca.Close()
	defer cb.Close()
	local, _, ok := a.agent.Selected()
	if !ok {
		t.Fatal("no selected pair")
	}
	to := net.UDPAddrFromAddrPort(local.Addr)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var sent [][]byte
	for _, setters := range [][]stun.Setter{
		{stun.TransactionID, stun.BindingRequest, stun.Fingerprint},
		{stun.TransactionID, stun.BindingRequest, stun.NewUsername(a.ufrag + ":" + b.ufrag), stun.NewShortTermIntegrity("not-the-password-at-all"), stun.Fingerprint},
		{stun.TransactionID, stun.BindingRequest, stun.NewUsername("strangerufrag:other"), stun.NewShortTermIntegrity("a-password-of-its-own-22"), stun.Fingerprint},
		{stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication)},
	} {
		m, err := stun.Build(setters...)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m.Raw)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 2, 19, 20, 21, 28, 40, 64, 100, 548, 1200} {
		for first := range 256 {
			p := make([]byte, size)
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			p[0] = byte(first)
			if size >= 8 {
				copy(p[4:8], []byte{0x21, 0x12, 0xa4, 0x42}) // STUN's magic cookie
			}
			sent = append(sent, p)
		}
	}
	smallest := 1 << 16
	for _, p := range sent {
		smallest = min(smallest, len(p))
		pc.WriteTo(p, to)
		if len(sent) > 16 {
			time.Sleep(50 * time.Microsecond)
		}
	}
	largest, replies := 0, 0
	buf := make([]byte, 2048)
	for {
		pc.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		replies++
		largest = max(largest, n)
	}
	t.Logf("%d datagrams sent (smallest %d bytes): %d replies, largest %d bytes", len(sent), smallest, replies, largest)
	if replies > 0 {
		t.Errorf("%d replies to a stranger (largest %d bytes)", replies, largest)
	}
	// The pair still carries data.
	if _, err := ca.WriteTo([]byte("still up"), nil); err != nil {
		t.Fatal(err)
	}
	cb.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := cb.ReadFrom(buf); err != nil || string(buf[:n]) != "still up" {
		t.Fatalf("after the stranger's datagrams: %q, %v", buf[:n], err)
	}
}

package rendezvous

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

// fspConfig is the FSP configuration of the peers; Session.FSP adds the
// keys.
func fspConfig() *fsp.Config { return &fsp.Config{} }

// fspPair rendezvouses alice and bob on loopback and connects them with FSP.
func fspPair(t *testing.T, ctx context.Context) (*fsp.Conn, *fsp.Conn) {
	t.Helper()
	url := newServer(t, NewServer(Config{MaxWait: time.Second}))
	sa, sb := connectBoth(t, ctx, url, loopbackICE(), loopbackICE())
	var (
		wg   sync.WaitGroup
		cb   *fsp.Conn
		errB error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cb, errB = sb.FSP(ctx, fspConfig())
	}()
	ca, errA := sa.FSP(ctx, fspConfig())
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("FSP: alice %v, bob %v", errA, errB)
	}
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

func TestFSPOverICE(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca, cb := fspPair(t, ctx)

	for i := range 10 {
		msg := fmt.Appendf(nil, "message %d from alice", i)
		if err := ca.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
		got, err := cb.ReceiveMessage(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("bob got %q, %v", got, err)
		}
		if err := cb.SendMessage(ctx, bytes.ToUpper(msg)); err != nil {
			t.Fatal(err)
		}
		got, err = ca.ReceiveMessage(ctx)
		if err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
			t.Fatalf("alice got %q, %v", got, err)
		}
	}

	size := 4 << 20
	if testing.Short() {
		size = 256 << 10
	}
	big := make([]byte, size)
	rand.Read(big)
	errc := make(chan error, 1)
	go func() { errc <- ca.SendMessage(ctx, big) }()
	got, err := cb.ReceiveMessage(ctx)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("bob got %d bytes, %v", len(got), err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func BenchmarkFSPOverICE(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	url := newServerB(b)
	var (
		wg         sync.WaitGroup
		sa, sb     *Session
		errA, errB error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sb, errB = Connect(ctx, ConnectConfig{Key: testKey("bob"), Peer: id("alice"), RendezvousURL: url, ICE: loopbackICE()})
	}()
	sa, errA = Connect(ctx, ConnectConfig{Key: testKey("alice"), Peer: id("bob"), RendezvousURL: url, ICE: loopbackICE()})
	wg.Wait()
	if errA != nil || errB != nil {
		b.Fatal(errA, errB)
	}
	defer sa.Close()
	defer sb.Close()
	var cb *fsp.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		cb, errB = sb.FSP(ctx, fspConfig())
	}()
	ca, errA := sa.FSP(ctx, fspConfig())
	wg.Wait()
	if errA != nil || errB != nil {
		b.Fatal(errA, errB)
	}
	msg := make([]byte, 1<<20)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	go func() {
		for range b.N {
			if err := ca.SendMessage(ctx, msg); err != nil {
				return
			}
		}
	}()
	for range b.N {
		if _, err := cb.ReceiveMessage(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFSPOverUDP is the baseline for BenchmarkFSPOverICE: the same
// transfer over a plain loopback UDP socket.
func BenchmarkFSPOverUDP(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, err := fsp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), fspConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var (
		wg   sync.WaitGroup
		cb   *fsp.Conn
		errB error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cb, errB = l.Accept(ctx)
	}()
	ca, err := fsp.Dial(ctx, l.Addr().(*net.UDPAddr).AddrPort(), fspConfig())
	wg.Wait()
	if err != nil || errB != nil {
		b.Fatal(err, errB)
	}
	defer ca.Close()
	msg := make([]byte, 1<<20)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	go func() {
		for range b.N {
			if err := ca.SendMessage(ctx, msg); err != nil {
				return
			}
		}
	}()
	for range b.N {
		if _, err := cb.ReceiveMessage(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStackOverICE runs psi transients from fsp.Stack over the path, as a
// carrier would.
func TestStackOverICE(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := newServer(t, NewServer(Config{MaxWait: time.Second}))
	sa, sb := connectBoth(t, ctx, url, loopbackICE(), loopbackICE())
	l, err := (&fsp.Stack{Transport: sb.Transport()}).Listen(ctx, netip.AddrPort{}, &psi.Config{Security: sb.Security(psi.Security{})})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan psi.Transient, 1)
	go func() {
		tr, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- tr
	}()
	ta, err := (&fsp.Stack{Transport: sa.Transport()}).Dial(ctx, sa.PeerAddrPort(), &psi.Config{Security: sa.Security(psi.Security{})})
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	tb := <-accepted
	if tb == nil {
		t.FailNow()
	}
	defer tb.Close()
	if err := ta.WriteMessage(ctx, []byte("over a psi transient"), true, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, end, err := tb.ReadMessage(ctx, buf)
	if err != nil || !end || string(buf[:n]) != "over a psi transient" {
		t.Fatalf("read %q end=%v err=%v", buf[:n], end, err)
	}
}

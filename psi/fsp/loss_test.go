package fsp

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
)

// lossyPair connects a client and a server whose outbound packets both
// pass through netem with the given impairment.
func lossyPair(t testing.TB, imp netem.Config) (client, server *Conn) {
	return lossyPairConfig(t, imp, nil)
}

func lossyPairConfig(t testing.TB, imp netem.Config, tweak func(*Config)) (client, server *Conn) {
	t.Helper()
	return lossyPairWrapped(t, imp, tweak, nil)
}

// lossyPairWrapped is lossyPairConfig with the client's socket wrapped by
// wrap, if not nil (a test that drops or watches what the client sends).
func lossyPairWrapped(t testing.TB, imp netem.Config, tweak func(*Config), wrap func(net.PacketConn) net.PacketConn) (client, server *Conn) {
	t.Helper()
	scfg, ccfg := pair(t)
	if tweak != nil {
		tweak(scfg)
		tweak(ccfg)
	}
	spc, err := netem.Listen("udp4", "127.0.0.1:0", imp)
	if err != nil {
		t.Fatal(err)
	}
	imp.Seed++
	cpc, err := netem.Listen("udp4", "127.0.0.1:0", imp)
	if err != nil {
		t.Fatal(err)
	}
	st := &Transport{Conn: spc}
	ct := &Transport{Conn: cpc}
	if wrap != nil {
		ct.Conn = wrap(cpc)
	}
	t.Cleanup(func() { ct.Close(); st.Close(); cpc.Close(); spc.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	ch := make(chan *Conn, 1)
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		ch <- s
	}()
	client, err = ct.Dial(ctx, spc.LocalAddr().(*net.UDPAddr), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	if server == nil {
		t.FailNow()
	}
	return client, server
}

// transfer sends total bytes in 64 KiB messages and checks the SHA-256.
func transfer(t *testing.T, c, s *Conn, total int) {
	ctx := testContext(t)
	const chunk = 64 << 10
	src := randBytes(chunk)
	want := sha256.New()
	errc := make(chan error, 1)
	go func() {
		for sent := 0; sent < total; sent += chunk {
			src[0], src[1], src[2] = byte(sent), byte(sent>>8), byte(sent>>16)
			want.Write(src)
			if err := c.SendMessage(ctx, src); err != nil {
				errc <- err
				return
			}
		}
		errc <- c.CloseContext(ctx) // more than the default linger over a slow path
	}()
	got := sha256.New()
	buf := make([]byte, 32<<10)
	n, msgs, cur := 0, 0, 0
	start := time.Now()
	for {
		k, end, err := s.ReadMessage(ctx, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		got.Write(buf[:k])
		n += k
		cur += k
		if end {
			if cur != chunk {
				t.Fatalf("message %d has %d bytes", msgs, cur)
			}
			cur = 0
			msgs++
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != total || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("received %d of %d bytes; hash match %v", n, total, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	d := time.Since(start)
	t.Logf("%d MB in %v: %.1f MB/s", total>>20, d, float64(total)/d.Seconds()/1e6)
}

func TestLossyTransfer(t *testing.T) {
	total := 100 << 20
	if testing.Short() {
		total = 10 << 20
	}
	c, s := lossyPair(t, netem.Config{Loss: 0.05, Reorder: 0.02, ReorderDelay: 2 * time.Millisecond, Duplicate: 0.01, Seed: 7})
	transfer(t, c, s, total)
}

func TestLossyDelayedTransfer(t *testing.T) {
	c, s := lossyPair(t, netem.Config{Loss: 0.03, Delay: 5 * time.Millisecond, Jitter: time.Millisecond,
		Reorder: 0.02, Duplicate: 0.01, Rate: 20 << 20, Seed: 5})
	// 3% random loss each way holds loss-based congestion control to a
	// window of a few packets (Mathis), so keep this one small.
	transfer(t, c, s, 3<<20)
	st := c.Stats()
	t.Logf("sender %+v", st)
	if st.SmoothedRTT < 10*time.Millisecond {
		t.Fatalf("RTT estimate %v below the emulated 10 ms", st.SmoothedRTT)
	}
}

package carrier_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/psi"
)

// BenchmarkResumedReaderFirst measures a resumed 0-RTT dial whose caller
// reads first: from Dial to the first message the server sends, on the
// psi transients of FSP and QUIC (the Carrier asks for 0-RTT only with
// an idempotent message to send), on loopback and over a 20 ms round
// trip (internal/netem relay):
//
//	go test -run XXX -bench ResumedReaderFirst -benchtime 30x ./carrier
func BenchmarkResumedReaderFirst(b *testing.B) {
	for _, rtt := range []time.Duration{0, 20 * time.Millisecond} {
		for _, st := range carrier.DefaultStacks()[:2] {
			b.Run(fmt.Sprintf("rtt=%v/%s", rtt, st.Name()), func(b *testing.B) { benchReaderFirst(b, st, rtt) })
		}
	}
}

func benchReaderFirst(b *testing.B, st psi.Stack, rtt time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}, Allow0RTT: true}
	l, err := st.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			s, err := l.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				defer s.Close()
				if s.WriteMessage(ctx, []byte("server first"), true, nil) != nil {
					return
				}
				buf := make([]byte, 64)
				for { // until the client closes
					if _, _, err := s.ReadMessage(ctx, buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	remote := l.Addr()
	if rtt > 0 {
		d := netem.Config{Delay: rtt / 2}
		r, err := netem.NewRelay(remote, d, d)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		remote = r.Addr()
	}
	ccfg := &psi.Config{Security: psi.Security{RootCAs: certs.Pool, SessionCache: tls.NewLRUClientSessionCache(4)}, Allow0RTT: true}
	buf := make([]byte, 64)
	dial := func() (psi.Transient, time.Duration) {
		start := time.Now()
		t, err := st.Dial(ctx, remote, ccfg)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := t.ReadMessage(ctx, buf); err != nil {
			b.Fatal(err)
		}
		return t, time.Since(start)
	}
	t, _ := dial() // a full handshake leaves a ticket
	t.WriteMessage(ctx, []byte("bye"), true, nil)
	t.Close()
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		t, d := dial()
		total += d
		b.StopTimer()
		if z, ok := t.(psi.ZeroRTTReporter); !ok || !z.Used0RTT() {
			b.Fatalf("%s: the dial did not resume with 0-RTT", st.Name())
		}
		t.WriteMessage(ctx, []byte("bye"), true, nil) // the next ticket is in
		t.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/first-read")
}

package cases

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/quic"
)

// longJunk makes datagrams of 1,200 bytes that look like QUIC
// long-header Initials of version 1 (to be decrypted, and fail) or of an
// unknown version (which ask for Version Negotiation).
func longJunk(r *rand.Rand) []byte {
	p := randBytes(r, 1200)
	p[0] = 0xc0 | p[0]&0x0f
	v := uint32(1)
	if r.IntN(2) == 0 {
		v = 0x1a2a3a4a
	}
	binary.BigEndian.PutUint32(p[1:], v)
	p[5] = byte(8 + r.IntN(13)) // DCID length
	return p
}

// shortJunk makes datagrams of 1 to 1,400 random bytes: half of them
// with a QUIC short header (to a connection nobody has), and none of
// 1,200 bytes or more with a long header (which QUIC may answer, with
// Version Negotiation).
func shortJunk(r *rand.Rand) []byte {
	p := randBytes(r, 1+r.IntN(1400))
	if r.IntN(2) == 0 || len(p) >= 1200 {
		p[0] = 0x40 | p[0]&0x3f
	}
	return p
}

func randBytes(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// junkFlood sends junk from two sockets at 127.0.0.2 as fast as they
// can: long headers of 1,200 bytes from one, counted in b, and short
// junk from the other, counted in short. A listener may answer the first
// (Version Negotiation, no larger than the packet) and should answer
// nothing of the second.
func junkFlood(ctx context.Context, to netip.AddrPort, b, short *attack.Bytes) {
	junkFloodFrom(ctx, to, []netip.Addr{attackerAddr}, b, short)
}

// junkFloodFrom is junkFlood from two sockets at each of srcs.
func junkFloodFrom(ctx context.Context, to netip.AddrPort, srcs []netip.Addr, b, short *attack.Bytes) {
	var wg sync.WaitGroup
	for j, src := range srcs {
		for i, kind := range []func(*rand.Rand) []byte{longJunk, shortJunk} {
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
			if err != nil {
				break
			}
			bytes := b
			if i == 1 {
				bytes = short
			}
			wg.Go(func() {
				defer pc.Close()
				r := rand.New(rand.NewPCG(uint64(2*j+i), uint64(time.Now().UnixNano())))
				attack.UDPFlood(ctx, pc, to, 0, func() []byte { return kind(r) }, nil, bytes)
			})
		}
	}
	wg.Wait()
}

// statelessReset is the size of quic-go's stateless resets, which a QUIC
// listener with a reset key (psi/quic resetkey.go) sends to a
// short-header datagram of a connection it does not know, if the
// datagram is larger (RFC 9000 §10.3).
const statelessReset = 42

// junkCheck fails if any short junk got an answer larger than allowed
// bytes (0: any answer).
func junkCheck(short *attack.Bytes, allowed int64) (string, error) {
	sent, recv := short.Totals()
	switch {
	case recv == 0:
		return "no answer to short junk", nil
	case short.Largest() > allowed:
		return "", fmt.Errorf("%d bytes back for %d bytes of short junk, a reply of %d bytes", recv, sent, short.Largest())
	}
	return fmt.Sprintf("%d bytes back for %d bytes of short junk, replies of at most %d bytes (stateless resets)", recv, sent, short.Largest()), nil
}

// goroutinesBack waits up to 5 s, once the listener is closed, for the
// goroutines to fall back to what they were before it was made (within
// 4), and records the figures in r.
func goroutinesBack(r *attack.Result, before int) {
	deadline := time.Now().Add(5 * time.Second)
	n := runtime.NumGoroutine()
	for n > before+4 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	r.Note += fmt.Sprintf("; goroutines %d before the listener, %d after it closed", before, n)
	if n > before+4 && r.CheckErr == nil {
		r.CheckErr = fmt.Errorf("%d goroutines after the listener closed, %d before it", n, before)
	}
}

// QUICJunk floods a QUIC listener that reports connection events (its
// qlog hooks on) with junk datagrams while a client dials.
func QUICJunk(o attack.Options) (*attack.Result, error) {
	before := runtime.NumGoroutine()
	ctx := context.Background()
	scfg := &psi.Config{Events: true, Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	st := &quic.Stack{}
	ln, err := st.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	serve(ctx, ln, closeTransient)
	ccfg := &psi.Config{Events: true, Security: psi.Security{InsecureSkipVerify: true}}
	var short attack.Bytes
	c := attack.Case{
		Name:   "QUIC junk datagrams, events on",
		Budget: 32 << 20,
		Dial:   legitDial(st, ln.Addr(), ccfg),
		Attack: func(ctx context.Context, b *attack.Bytes) { junkFlood(ctx, ln.Addr(), b, &short) },
		Check:  func() (string, error) { return junkCheck(&short, statelessReset) },
	}
	r := attack.Run(c, o)
	ln.Close()
	goroutinesBack(r, before)
	return r, nil
}

// FSPJunk floods an FSP listener (sockio's shared pools) with the same
// junk.
func FSPJunk(o attack.Options) (*attack.Result, error) {
	before := runtime.NumGoroutine()
	l, ccfg, err := fspListener()
	if err != nil {
		return nil, err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			go c.Close()
		}
	}()
	var short attack.Bytes
	c := attack.Case{
		Name:   "FSP junk datagrams",
		Budget: 32 << 20,
		Dial:   fspDial(l, ccfg),
		Attack: func(ctx context.Context, b *attack.Bytes) { junkFlood(ctx, fspAddr(l), b, &short) },
		Check:  func() (string, error) { return junkCheck(&short, 0) },
	}
	r := attack.Run(c, o)
	l.Close()
	goroutinesBack(r, before)
	return r, nil
}

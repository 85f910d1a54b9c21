package cases

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/quic"
)

// deafConn is a client socket that counts what arrives and never passes
// it on, so the client's handshake never completes.
type deafConn struct {
	net.PacketConn // an interface: quic-go must not see the *net.UDPConn
	b              *attack.Bytes
	done           chan struct{}
	once           sync.Once
}

func newDeafConn(pc *net.UDPConn, b *attack.Bytes) *deafConn {
	d := &deafConn{PacketConn: pc, b: b, done: make(chan struct{})}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			b.Recv(n)
		}
	}()
	return d
}

func (d *deafConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-d.done
	return 0, nil, net.ErrClosed
}

func (d *deafConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	n, err := d.PacketConn.WriteTo(p, addr)
	if err == nil {
		d.b.Sent(n)
	}
	return n, err
}

func (d *deafConn) Close() error {
	d.once.Do(func() { close(d.done) })
	return d.PacketConn.Close()
}

// QUICHandshakeFlood starts 100 QUIC handshakes from one address that
// never get past the client's first flight, restarting each one every
// 500 ms, while a client dials from a new address of 127.0.0.0/24 each
// time (legitDial).
func QUICHandshakeFlood(o attack.Options) (*attack.Result, error) {
	ctx := context.Background()
	scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	st := &quic.Stack{}
	ln, err := st.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	serve(ctx, ln, closeTransient)
	ccfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}}
	var started atomic.Int64
	c := attack.Case{
		Name:   "QUIC handshakes never completed, one address",
		Budget: 32 << 20,
		Dial:   legitDial(st, ln.Addr(), ccfg),
		Attack: func(ctx context.Context, b *attack.Bytes) {
			tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{quic.DefaultALPN}}
			var wg sync.WaitGroup
			// 100, or fewer in a slower build (attack.Paced): still more
			// than a source may have in progress.
			for range attack.Paced(100) {
				wg.Go(func() {
					for ctx.Err() == nil {
						pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: attackerAddr.AsSlice()})
						if err != nil {
							return
						}
						d := newDeafConn(pc, b)
						dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
						// quic-go waits for its reader when the dial ends.
						context.AfterFunc(dctx, func() { d.Close() })
						started.Add(1)
						quicgo.Dial(dctx, d, net.UDPAddrFromAddrPort(ln.Addr()), tc, &quicgo.Config{})
						cancel()
						d.Close()
					}
				})
			}
			wg.Wait()
		},
		Check: func() (string, error) {
			return fmt.Sprintf("%d handshakes started", started.Load()), nil
		},
	}
	return attack.Run(c, o), nil
}

// quicBudget is the QUIC listener's Stack.MemoryBudget in QUICUnread.
const quicBudget = 32 << 20

// QUICUnread opens 12 connections from each of 8 addresses, one after
// another, forks a stream on each, and has every stream send as much as
// the server lets it; the server application accepts the connections but
// never reads them nor accepts the forks. The listener's receive budget
// must hold the windows it gave them within its limit: past an
// address's share its connections get the smallest window, and a dial
// without room for that is refused with post.ErrRefused.
func QUICUnread(o attack.Options) (*attack.Result, error) {
	ctx := context.Background()
	scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	st := &quic.Stack{MemoryBudget: quicBudget}
	ln, err := st.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	l := ln.(*quic.Listener)
	// The application keeps the attacker's roots unread and closes the
	// legitimate client's (from 127.0.0.0/24, legitDial).
	legit := netip.MustParsePrefix("127.0.0.0/24")
	serve(ctx, ln, func(t psi.Transient) {
		if legit.Contains(t.Path().Remote.Addr()) {
			t.Close()
		}
	})
	ccfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}}
	var mu sync.Mutex
	var opened, refused, timedOut int
	var other []string
	var base, withAttacker, dropped uint64
	c := attack.Case{
		Name: "QUIC connections and forks never accepted or read",
		// The attacker's connections run in this process too, and the
		// state of both ends (370 to 600 KiB a connection with its fork:
		// psi/quic's read buffers, the framers' buffers, writes in
		// flight) is not in the windows, so the heap's bound is loose:
		// in 10 s runs 96 connections took 52 to 59 MiB with the
		// budget and 138 MiB before it (768 KiB of window each). Check
		// holds the listener's windows to its budget.
		Budget: 3 * quicBudget,
		Dial:   legitDial(st, ln.Addr(), ccfg),
		Attack: func(ctx context.Context, _ *attack.Bytes) {
			base = attack.LiveHeap()
			msg := make([]byte, 64<<10)
			var wg, senders sync.WaitGroup
			var all []psi.Transient
			for _, src := range attack.Sources(8) {
				acfg := *ccfg
				acfg.Local = netip.AddrPortFrom(src, 0)
				wg.Go(func() {
					// Fewer in a slower build (attack.Paced).
					for range attack.Paced(12) {
						t, err := st.Dial(ctx, ln.Addr(), &acfg)
						if err != nil && ctx.Err() != nil {
							return // the attack's end
						}
						mu.Lock()
						switch {
						case errors.Is(err, post.ErrRefused):
							refused++
						case errors.Is(err, post.ErrTimeout):
							timedOut++ // a loaded host
						case err != nil:
							other = append(other, err.Error())
						default:
							opened++
						}
						mu.Unlock()
						if err != nil {
							continue
						}
						streams := []psi.Transient{t}
						if f, err := t.Fork(ctx, 0); err == nil {
							streams = append(streams, f)
						}
						mu.Lock()
						all = append(all, streams...)
						mu.Unlock()
						for _, s := range streams {
							senders.Go(func() {
								for s.WriteMessage(ctx, msg, true, nil) == nil {
								}
							})
						}
					}
				})
			}
			wg.Wait()
			<-ctx.Done()
			withAttacker = attack.LiveHeap()
			for _, t := range all {
				t.(psi.Aborter).Abort(nil)
			}
			senders.Wait()
			dropped = attack.LiveHeap()
		},
		Settle: time.Second,
		Check: func() (string, error) {
			bs := l.BudgetStats()
			mu.Lock()
			defer mu.Unlock()
			note := fmt.Sprintf("%d connections opened, %d refused, %d timed out; the listener's windows held at most %s of its %s budget (%d connections refused by it); "+
				"heap %s before the attack, %s at its end with the attacker's connections, %s just after it dropped them",
				opened, refused, timedOut, attack.MiB(uint64(bs.Peak)), attack.MiB(uint64(bs.Budget)), bs.Refused,
				attack.MiB(base), attack.MiB(withAttacker), attack.MiB(dropped))
			switch {
			case bs.Peak > bs.Budget:
				return note, fmt.Errorf("listener over its receive budget")
			case len(other) > 0:
				return note, fmt.Errorf("dials failed otherwise than with %v: %v", post.ErrRefused, other)
			}
			return note, nil
		},
	}
	return attack.Run(c, o), nil
}

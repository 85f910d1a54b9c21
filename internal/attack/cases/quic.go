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

// quicBudget is the QUIC listener's Stack.MemoryBudget in QUICUnread,
// QUICForkFlood and QUICForkRead.
const quicBudget = 32 << 20

// budgetListener starts a QUIC listener with a quicBudget receive budget
// whose application hands the attacker's roots to attacker (nil keeps
// them unread) and closes the legitimate client's (from 127.0.0.0/24,
// legitDial), and returns a client config and the legitimate client's
// dial.
func budgetListener(attacker func(psi.Transient)) (*quic.Stack, *quic.Listener, *psi.Config, func(context.Context) error, error) {
	ctx := context.Background()
	scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	st := &quic.Stack{MemoryBudget: quicBudget}
	ln, err := st.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	legit := netip.MustParsePrefix("127.0.0.0/24")
	serve(ctx, ln, func(t psi.Transient) {
		switch {
		case legit.Contains(t.Path().Remote.Addr()):
			t.Close()
		case attacker != nil:
			attacker(t)
		}
	})
	ccfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}}
	return st, ln.(*quic.Listener), ccfg, legitDial(st, ln.Addr(), ccfg), nil
}

// QUICUnread opens 12 connections from each of 8 addresses, one after
// another, forks a stream on each, and has every stream send as much as
// the server lets it; the server application accepts the connections but
// never reads them nor accepts the forks. The listener's receive budget
// must hold the windows it gave them within its limit: past an
// address's share its connections get the smallest window, and a dial
// without room for that is refused with post.ErrRefused.
func QUICUnread(o attack.Options) (*attack.Result, error) {
	st, l, ccfg, dial, err := budgetListener(nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()
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
		Dial:   dial,
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
						t, err := st.Dial(ctx, l.Addr(), &acfg)
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

// QUICForkFlood has 8 addresses open a connection each and fork every
// stream the listener allows (up to 1,000 a connection at once, 1,000
// in all, 500 a second), each fork sending the first byte of a message and no more;
// the application accepts the connections and never their forks. The
// attacker speaks psi/quic's stream headers over quic-go directly
// (rawFork), so that what the process holds is mostly the listener's.
// Each fork's state is charged to the listener's receive budget
// (psi/quic streamCost) and a fork without room is refused, so the
// forks stay within the budget. Before, a fork cost about 20 KiB
// (psi/quic's read buffer made at once) outside it.
func QUICForkFlood(o attack.Options) (*attack.Result, error) {
	// The attacker's raw quic-go streams run in this process too
	// (about 1.5 KB a stream).
	return forkFlood(o, "QUIC forks never accepted, each with a byte sent", nil, 2*quicBudget)
}

// QUICForkRead is QUICForkFlood against an application that accepts
// every fork and reads it, so that each has a read buffer, charged to
// the listener's budget (16 KiB) while under half of it is used and a
// small one past that. Before the charge the forks' buffers (16 KiB
// each, outside the budget) took 54 MiB in a 2 s run, 26 MiB after it.
func QUICForkRead(o attack.Options) (*attack.Result, error) {
	return forkFlood(o, "QUIC forks accepted and read, each with a byte sent", readForks, quicBudget*5/4)
}

// readForks accepts every fork of root and reads each until it fails.
func readForks(root psi.Transient) {
	ctx := context.Background()
	for {
		f, err := root.AcceptFork(ctx)
		if err != nil {
			return
		}
		go func() {
			defer f.(psi.Aborter).Abort(nil)
			buf := make([]byte, 64)
			for {
				if _, _, err := f.ReadMessage(ctx, buf); err != nil {
					return
				}
			}
		}()
	}
}

// forkFlood runs QUICForkFlood's attack against a listener whose
// application hands the attacker's roots to attacker; heap bounds the
// heap's growth.
func forkFlood(o attack.Options, name string, attacker func(psi.Transient), heap uint64) (*attack.Result, error) {
	_, l, _, dial, err := budgetListener(attacker)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	var forked atomic.Int64
	c := attack.Case{
		Name:   name,
		Budget: heap,
		Dial:   dial,
		Attack: func(ctx context.Context, _ *attack.Bytes) {
			var wg sync.WaitGroup
			for _, src := range attack.Sources(8) {
				wg.Go(func() { forked.Add(int64(rawForks(ctx, src, l.Addr(), attack.Paced(1000)))) })
			}
			wg.Wait()
		},
		Settle: time.Second,
		Check: func() (string, error) {
			bs := l.BudgetStats()
			note := fmt.Sprintf("%d forks opened, %d refused by the listener's budget, %d read with a small buffer; the budget held at most %s of its %s",
				forked.Load(), bs.RefusedStreams, bs.SmallReadBuffers, attack.MiB(uint64(bs.Peak)), attack.MiB(uint64(bs.Budget)))
			if bs.Peak > bs.Budget {
				return note, fmt.Errorf("listener over its receive budget")
			}
			return note, nil
		},
	}
	return attack.Run(c, o), nil
}

// rawForks dials to from src with quic-go, opens a root stream and up to
// n fork streams of it, each with a psi/quic stream header (psi/quic
// wire.go: version 1, kind 1 and a 16-byte association for the root;
// version 1, kind 2, a traffic class and the parent's stream ID, 8
// bytes big-endian, for a fork) and the first byte of a 100-byte
// message, then holds them until ctx ends. It returns the forks opened.
func rawForks(ctx context.Context, src netip.Addr, to netip.AddrPort, n int) int {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
	if err != nil {
		return 0
	}
	defer pc.Close()
	tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{quic.DefaultALPN}}
	qc, err := quicgo.Dial(ctx, pc, net.UDPAddrFromAddrPort(to), tc, &quicgo.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		return 0
	}
	defer qc.CloseWithError(0, "")
	root, err := qc.OpenStream()
	if err != nil {
		return 0
	}
	if _, err := root.Write(append([]byte{1, 1}, make([]byte, 16)...)); err != nil {
		return 0
	}
	opened := 0
	fork := []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 0, byte(root.StreamID()), 0, 0, 0, 100, 'x'}
	// Paced: 500 forks a second (a slower build fewer, attack.Slowdown),
	// a flood of memory, not of CPU, which a loaded host's legitimate
	// handshakes would have to share.
	tick := time.NewTicker(2 * time.Millisecond * attack.Slowdown)
	defer tick.Stop()
	for range n {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return opened
		}
		s, err := qc.OpenStreamSync(ctx) // waits for the listener's stream credit
		if err != nil {
			break
		}
		if _, err := s.Write(fork); err != nil {
			break
		}
		opened++
	}
	<-ctx.Done()
	return opened
}

package cases

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

// memoryBudget is the FSP listeners' Config.MemoryBudget here.
const memoryBudget = 32 << 20

func fspListener() (*fsp.Listener, *fsp.Config, error) {
	scfg := &fsp.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}, MemoryBudget: memoryBudget}
	l, err := fsp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, nil, err
	}
	return l, &fsp.Config{Security: psi.Security{InsecureSkipVerify: true}, HandshakeTimeout: 3 * time.Second}, nil
}

func fspAddr(l *fsp.Listener) netip.AddrPort {
	return l.Addr().(*net.UDPAddr).AddrPort()
}

func fspDial(l *fsp.Listener, ccfg *fsp.Config) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := fsp.Dial(ctx, fspAddr(l), ccfg)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// FSPUnaccepted opens connections from 8 addresses, 6 each, forks 3
// clones of each, and has every connection and clone send as much as
// the server lets it; the server application never reads them nor
// accepts the clones.
func FSPUnaccepted(o attack.Options) (*attack.Result, error) {
	l, ccfg, err := fspListener()
	if err != nil {
		return nil, err
	}
	defer l.Close()
	// The application accepts every connection but never reads the
	// attacker's, nor accepts their clones; it closes the legitimate ones.
	// (Left in the accept queue, even closed ones hold their share of the
	// budget until accepted.)
	go func() {
		for {
			s, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			if ap, _ := netip.ParseAddrPort(s.RemoteAddr().String()); ap.Addr() == netip.MustParseAddr("127.0.0.1") {
				go s.Close()
			}
		}
	}()
	var opened, refused int
	// The heap before the attack, once it ended with the attacker's
	// connections still open, and after the attacker dropped them: it
	// runs in this process, so the last less the first is the server's
	// part (which it keeps until its idle timeout finds the peers gone).
	var base, withAttacker, serverPart uint64
	var heldConns int
	var held int64
	c := attack.Case{
		Name: "FSP connections and clones never accepted or read",
		// The attacker runs in this process, and its own send buffers
		// count in the heap: the listener's accounting is checked
		// against its budget in Check.
		Budget: 4 * memoryBudget,
		Dial:   fspDial(l, ccfg),
		Attack: func(ctx context.Context, b *attack.Bytes) {
			base = attack.LiveHeap()
			var mu sync.Mutex
			var closers []func()
			var wg, senders sync.WaitGroup
			// A small send buffer limits the attacker's own memory (it
			// runs in this process; still about 230 KiB of datagram
			// buffers a connection, a batch or two past the buffer): it
			// writes as long as the server's windows take data.
			acfg := *ccfg
			acfg.SendBuffer = 128 << 10
			msg := make([]byte, 64<<10)
			// Every connection and clone moves data until the server's
			// windows close, CPU the race detector multiplies: a slower
			// build opens fewer per source (attack.Paced).
			for _, src := range attack.Sources(8) {
				for range attack.Paced(6) {
					wg.Add(1)
					go func() {
						defer wg.Done()
						conn, abort, err := dialFrom(ctx, src, fspAddr(l), &acfg)
						if err != nil {
							mu.Lock()
							refused++
							mu.Unlock()
							return
						}
						conns := []*fsp.Conn{conn}
						for range 3 {
							if f, err := conn.Fork(ctx); err == nil {
								conns = append(conns, f)
							} else {
								mu.Lock()
								refused++
								mu.Unlock()
							}
						}
						mu.Lock()
						closers = append(closers, abort)
						opened += len(conns)
						mu.Unlock()
						for _, c := range conns {
							senders.Go(func() {
								for c.SendMessage(ctx, msg) == nil {
								}
							})
						}
					}()
				}
			}
			wg.Wait()
			<-ctx.Done()
			withAttacker = attack.LiveHeap()
			for _, abort := range closers {
				abort()
			}
			senders.Wait()
			serverPart = attack.LiveHeap()
			st := l.Stats()
			heldConns, held = st.Conns, st.Committed
		},
		Settle: time.Second,
		Check: func() (string, error) {
			st := l.Stats()
			note := fmt.Sprintf("%d connections and clones opened, %d refused; the listener committed at most %s of its %s budget; "+
				"heap %s before the attack, %s at its end with the attacker's connections, %s once it dropped them (the server still holding %d connections, %s committed)",
				opened, refused, attack.MiB(uint64(st.Peak)), attack.MiB(uint64(st.Budget)),
				attack.MiB(base), attack.MiB(withAttacker), attack.MiB(serverPart), heldConns, attack.MiB(uint64(held)))
			if st.Peak > st.Budget {
				return note, fmt.Errorf("listener over its memory budget")
			}
			if serverPart > base+uint64(st.Budget) {
				return note, fmt.Errorf("the server's part of the heap, %s, is over its memory budget", attack.MiB(serverPart-base))
			}
			return note, nil
		},
	}
	return attack.Run(c, o), nil
}

// dialFrom dials over a socket bound to src; abort drops the connection
// and its clones without a goodbye.
func dialFrom(ctx context.Context, src netip.Addr, to netip.AddrPort, cfg *fsp.Config) (c *fsp.Conn, abort func(), err error) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
	if err != nil {
		return nil, nil, err
	}
	tr := &fsp.Transport{Conn: pc}
	abort = func() { pc.Close(); tr.Close() }
	c, err = tr.Dial(ctx, net.UDPAddrFromAddrPort(to), cfg)
	if err != nil {
		abort()
		return nil, nil, err
	}
	return c, abort, nil
}

// transferTimeout bounds FSPObserver's transfer.
const transferTimeout = 60 * time.Second

// FSPObserver sends 8 MiB from the server to a client whose packets,
// once connected, an attacker with a faster path copies from its own
// address; the attacker relays the server's answers to the client until
// an eighth has arrived (long enough for the server to validate its
// address), then drops them. The transfer must complete intact.
func FSPObserver(o attack.Options) (*attack.Result, error) {
	l, ccfg, err := fspListener()
	if err != nil {
		return nil, err
	}
	defer l.Close()
	var stalled time.Duration
	var terr error
	var obs *attack.Observer
	c := attack.Case{
		Name:   "FSP observer with a faster path",
		Budget: 64 << 20,
		Dial:   fspDial(l, ccfg),
		Attack: func(ctx context.Context, b *attack.Bytes) {
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				terr = err
				return
			}
			spy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 66, 0, 1)})
			if err != nil {
				pc.Close()
				terr = err
				return
			}
			obs = attack.NewObserver(netem.New(pc, netem.Config{Delay: 10 * time.Millisecond}), spy)
			tr := &fsp.Transport{Conn: obs}
			defer func() { obs.Close(); tr.Close() }()
			// The listener also queues the legitimate dials: pick the
			// victim's connection out, and close the others.
			acc := make(chan *fsp.Conn, 1)
			go func() {
				for {
					s, err := l.Accept(context.Background())
					if err != nil {
						close(acc)
						return
					}
					if ra := s.RemoteAddr().String(); ra == pc.LocalAddr().String() || ra == spy.LocalAddr().String() {
						acc <- s
						continue
					}
					go s.Close()
				}
			}()
			cc, err := tr.Dial(ctx, l.Addr(), ccfg)
			if err != nil {
				terr = err
				return
			}
			var s *fsp.Conn
			select {
			case s = <-acc:
			case <-ctx.Done():
			}
			if s == nil {
				terr = fmt.Errorf("accept failed")
				return
			}
			defer func() { go s.Close() }()
			obs.StartCopy()
			msg := make([]byte, 8<<20)
			rand.Read(msg)
			// The transfer may outlast the attack's ctx: how fast 8 MiB
			// arrive depends on the machine (and the race detector), and
			// what is checked is that it arrives whole and never stalls.
			// transferTimeout only keeps a broken transfer from hanging.
			tctx, cancel := context.WithTimeout(context.Background(), transferTimeout)
			defer cancel()
			go s.SendMessage(tctx, msg)
			got := make([]byte, 0, len(msg))
			buf := make([]byte, 64<<10)
			last := time.Now()
			for len(got) < len(msg) {
				n, _, err := cc.ReadMessage(tctx, buf)
				if err != nil {
					terr = fmt.Errorf("transfer: %w after %d of %d bytes", err, len(got), len(msg))
					return
				}
				stalled = max(stalled, time.Since(last))
				last = time.Now()
				got = append(got, buf[:n]...)
				if len(got) >= len(msg)/8 {
					obs.StopRelay()
				}
			}
			if !bytes.Equal(got, msg) {
				terr = fmt.Errorf("transfer corrupted")
			}
			<-ctx.Done()
		},
		Check: func() (string, error) {
			note := fmt.Sprintf("longest stall %v", stalled.Round(time.Millisecond))
			if obs != nil {
				note += fmt.Sprintf(", %d datagrams copied, %d dropped", obs.Copied.Load(), obs.Dropped.Load())
			}
			// The contract is one round trip plus one retransmission
			// timeout (about 60 ms here); a generous bound for a busy
			// machine.
			if terr == nil && stalled > time.Second {
				terr = fmt.Errorf("data stopped for %v", stalled)
			}
			return note, terr
		},
	}
	return attack.Run(c, o), nil
}

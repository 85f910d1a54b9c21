package quic

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/hsrate"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// maxBacklog bounds connections waiting for Accept or for their root
// stream, a quarter of them from one address; more are refused.
const maxBacklog = 256

// Listener accepts QUIC connections and returns their root transients. It
// implements psi.Listener.
type Listener struct {
	ql   *quicgo.EarlyListener
	tr   *transport
	hs   *handshakes // nil on a transport the caller supplied
	rb   *budget     // nil when Stack.MemoryBudget is negative
	cfg  *psi.Config
	addr netip.AddrPort

	ready   chan *Transient
	done    chan struct{}
	refused chan error   // see Refused
	backlog atomic.Int32 // connections without a root transient taken by Accept
	srcMu   sync.Mutex
	bySrc   map[netip.Addr]int // backlog per client address
	once    sync.Once
	wg      sync.WaitGroup
}

var _ psi.Listener = (*Listener)(nil)

// Listen accepts QUIC connections on local. Connections are accepted
// before their handshake completes only when they carry 0-RTT data
// (cfg.Allow0RTT); otherwise Accept returns a transient whose peer has
// been authenticated.
func (s *Stack) Listen(ctx context.Context, local netip.AddrPort, cfg *psi.Config) (psi.Listener, error) {
	l, err := s.listen(ctx, local, cfg)
	if err != nil {
		return nil, &post.OpError{Op: "listen", Stack: Name, Path: local.String(), Err: err}
	}
	return l, nil
}

func (s *Stack) listen(ctx context.Context, local netip.AddrPort, cfg *psi.Config) (*Listener, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = &psi.Config{}
	}
	tc, err := tlsConfig(cfg, true, netip.AddrPort{})
	if err != nil {
		return nil, err
	}
	if cfg.Allow0RTT {
		guardZeroRTT(tc) // replayed 0-RTT data is refused (antireplay.go)
	}
	tr, _, err := s.openTransport(local, netip.AddrPort{})
	if err != nil {
		return nil, err
	}
	qcfg := s.quicConfig(cfg, true)
	var rb *budget
	if s.MemoryBudget >= 0 {
		rb = newBudget(cmp.Or(s.MemoryBudget, DefaultMemoryBudget))
		qcfg = rb.config(qcfg, !s.DisableSmallFrameCount)
	}
	var hs *handshakes
	if tr.owned {
		tr.t.StatelessResetKey = statelessResetKey(tc)
		hs = newHandshakes(orDefault(s.MaxHandshakes, 128), orDefault(s.MaxHandshakesPerSource, 8), orDefault(s.MaxConnsPerSource, 1024))
		hs.rate = s.MaxHandshakeRate
		hs.install(tr.t, rb)
		if rb != nil {
			rb.abused = hs.abused
		}
	}
	ql, err := tr.t.ListenEarly(tc, qcfg)
	if err != nil {
		tr.release()
		return nil, mapError(err)
	}
	l := &Listener{
		hs:      hs,
		rb:      rb,
		ql:      ql,
		tr:      tr,
		cfg:     cfg,
		addr:    addrPort(ql.Addr()),
		ready:   make(chan *Transient),
		done:    make(chan struct{}),
		refused: make(chan error, 8),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		qc, err := l.ql.Accept(context.Background())
		if err != nil {
			return
		}
		// An early connection still counts against its source's
		// handshakes until the handshake completes.
		if l.hs != nil {
			l.hs.accepted(qc)
		}
		go func() {
			select {
			case <-qc.HandshakeComplete():
			case <-qc.Context().Done():
				l.clientRefused(qc)
			}
			handshakeDone(qc)
		}()
		src := hsrate.Host(addrPort(qc.RemoteAddr()).Addr())
		if l.backlog.Load() >= maxBacklog || !l.takeShare(src) {
			_ = qc.CloseWithError(codeRefused, "backlog full")
			continue
		}
		l.backlog.Add(1)
		l.tr.acquire()
		newConn(qc, l.tr, l.cfg, true, l.deliver, func() { l.backlog.Add(-1); l.giveShare(src) }, l.rb.of(qc.Context()))
	}
}

// takeShare counts a connection from src in the backlog, of which one
// address (hsrate.Host: an IPv6 /64) may hold a quarter.
func (l *Listener) takeShare(src netip.Addr) bool {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	if l.bySrc[src] >= maxBacklog/4 {
		return false
	}
	if l.bySrc == nil {
		l.bySrc = make(map[netip.Addr]int)
	}
	l.bySrc[src]++
	return true
}

func (l *Listener) giveShare(src netip.Addr) {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	if l.bySrc[src]--; l.bySrc[src] <= 0 {
		delete(l.bySrc, src)
	}
}

// deliver hands a root transient to Accept; false once the listener is
// closed.
func (l *Listener) deliver(t *Transient) bool {
	select {
	case l.ready <- t:
		return true
	case <-l.done:
		return false
	case <-t.c.qc.Context().Done():
		return false
	}
}

// Accept returns the root transient of the next connection.
func (l *Listener) Accept(ctx context.Context) (psi.Transient, error) {
	select {
	case t := <-l.ready:
		return t, nil
	case <-l.done:
		return nil, &post.OpError{Op: "accept", Stack: Name, Path: l.addr.String(), Err: post.ErrClosed}
	case <-ctx.Done():
		return nil, &post.OpError{Op: "accept", Stack: Name, Path: l.addr.String(), Err: ctx.Err()}
	}
}

// BudgetStats reports the listener's receive budget (Stack.MemoryBudget):
// the receive windows its connections hold and the connections refused
// for want of room.
func (l *Listener) BudgetStats() BudgetStats { return l.rb.stats() }

// Refused delivers the error of each client the listener refused for its
// credentials and of each client that refused the listener's, both
// wrapping post.ErrAuthentication. It holds 8; more are dropped until
// they are read. A peer-to-peer listener, which expects one known peer,
// ends its wait at the first.
func (l *Listener) Refused() <-chan error { return l.refused }

// clientRefused reports a connection that ended in its handshake on a
// TLS failure: this end refused the client, or the client this end.
func (l *Listener) clientRefused(qc *quicgo.Conn) {
	var te *quicgo.TransportError
	err := context.Cause(qc.Context())
	if !errors.As(err, &te) || !te.ErrorCode.IsCryptoError() {
		return
	}
	who := "the client was refused"
	if te.Remote {
		who = "the client refused this listener"
	}
	select {
	case l.refused <- fmt.Errorf("%w: %s: %w", post.ErrAuthentication, who, err):
	default:
	}
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// Addr returns the bound address.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Close stops accepting. Connections not yet returned by Accept are
// refused; accepted transients stay open, and the socket closes with the
// last of them. Until then a new connection is refused
// (CONNECTION_REFUSED, post.ErrRefused at the dialer), as FSP and TCP
// refuse one at once: without a server quic-go would drop its Initials
// and the dialer wait for its handshake timeout. quic-go's listener stays
// for that, and closes with the socket.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		if l.hs != nil {
			l.hs.closed.Store(true)
			l.tr.release()
			return
		}
		_ = l.ql.Close()
		l.wg.Wait()
		l.tr.release()
	})
	return nil
}

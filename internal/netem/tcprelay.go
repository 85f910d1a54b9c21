package netem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// TCPRelay forwards TCP connections to one server. Its blackhole stalls
// traffic instead of dropping bytes: a blackholed path makes TCP
// retransmit until it gives up, and since the relay's kernel already
// acknowledged the client's data, stalling is what the client observes.
// Connections accepted while blackholed are not forwarded until the
// blackhole lifts.
type TCPRelay struct {
	ln     *net.TCPListener
	server netip.AddrPort
	ctx    context.Context
	cancel context.CancelFunc
	gate   gate
	wg     sync.WaitGroup

	accepted, bytesUp, bytesDown atomic.Uint64

	mu     sync.Mutex
	conns  map[*tcpPair]struct{}
	closed bool
}

// TCPStats counts what a TCPRelay forwarded.
type TCPStats struct {
	Accepted  uint64 // connections accepted
	Active    int    // connections currently open
	BytesUp   uint64 // client to server
	BytesDown uint64 // server to client
}

type tcpPair struct {
	client *net.TCPConn
	mu     sync.Mutex
	server *net.TCPConn
	done   chan struct{}
	once   sync.Once
}

func (p *tcpPair) close() {
	p.once.Do(func() {
		close(p.done)
		p.client.Close()
		p.mu.Lock()
		if p.server != nil {
			p.server.Close()
		}
		p.mu.Unlock()
	})
}

// NewTCPRelay listens on an ephemeral TCP port of the loopback address of
// server's family and forwards connections to server.
func NewTCPRelay(server netip.AddrPort) (*TCPRelay, error) {
	return newTCPRelayOn(netip.AddrPortFrom(loopback(server.Addr()), 0), server)
}

func newTCPRelayOn(listen, server netip.AddrPort) (*TCPRelay, error) {
	network := "tcp4"
	if udpNet(listen.Addr()) == "udp6" {
		network = "tcp6"
	}
	ln, err := net.ListenTCP(network, net.TCPAddrFromAddrPort(listen))
	if err != nil {
		return nil, err
	}
	r := &TCPRelay{ln: ln, server: server, conns: make(map[*tcpPair]struct{})}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.gate.init()
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// NewDualRelay makes a Relay to udpServer and a TCPRelay to tcpServer
// listening on the same loopback port number, for tests of a client that
// tries UDP first and falls back to TCP on the same address.
func NewDualRelay(udpServer, tcpServer netip.AddrPort, up, down Config) (*Relay, *TCPRelay, error) {
	var err error
	for range 16 {
		var u *Relay
		u, err = NewRelay(udpServer, up, down)
		if err != nil {
			return nil, nil, err
		}
		var t *TCPRelay
		t, err = newTCPRelayOn(u.Addr(), tcpServer)
		if err == nil {
			return u, t, nil
		}
		u.Close()
	}
	return nil, nil, fmt.Errorf("netem: no port free for both UDP and TCP: %w", err)
}

// Addr is the address clients connect to.
func (r *TCPRelay) Addr() netip.AddrPort {
	return r.ln.Addr().(*net.TCPAddr).AddrPort()
}

// SetBlackhole stalls (on) or resumes (off) all forwarding.
func (r *TCPRelay) SetBlackhole(on bool) { r.gate.set(on) }

// Reset closes every forwarded connection; the relay keeps accepting.
func (r *TCPRelay) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.conns {
		p.close()
	}
}

// Stats returns the relay's counters.
func (r *TCPRelay) Stats() TCPStats {
	r.mu.Lock()
	n := len(r.conns)
	r.mu.Unlock()
	return TCPStats{
		Accepted:  r.accepted.Load(),
		Active:    n,
		BytesUp:   r.bytesUp.Load(),
		BytesDown: r.bytesDown.Load(),
	}
}

// Close stops accepting, closes every connection and waits for the
// relay's goroutines to exit.
func (r *TCPRelay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errClosed
	}
	r.closed = true
	for p := range r.conns {
		p.close()
	}
	r.mu.Unlock()
	r.cancel()
	err := r.ln.Close()
	r.wg.Wait()
	return err
}

func (r *TCPRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		r.accepted.Add(1)
		p := &tcpPair{client: c, done: make(chan struct{})}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns[p] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go r.serve(p)
	}
}

func (r *TCPRelay) serve(p *tcpPair) {
	defer r.wg.Done()
	defer func() {
		p.close()
		r.mu.Lock()
		delete(r.conns, p)
		r.mu.Unlock()
	}()
	if !r.gate.wait(p.done) {
		return
	}
	var d net.Dialer
	s, err := d.DialContext(r.ctx, "tcp", r.server.String())
	if err != nil {
		return
	}
	p.mu.Lock()
	p.server = s.(*net.TCPConn)
	p.mu.Unlock()
	select {
	case <-p.done: // closed while dialing
		s.Close()
		return
	default:
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.copy(p, p.server, p.client, &r.bytesUp) }()
	go func() { defer wg.Done(); r.copy(p, p.client, p.server, &r.bytesDown) }()
	wg.Wait()
}

// copy forwards src to dst through the gate, then half-closes dst.
func (r *TCPRelay) copy(p *tcpPair, dst, src *net.TCPConn, n *atomic.Uint64) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if !r.gate.wait(p.done) {
				return
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				p.close()
				return
			}
			n.Add(uint64(k))
		}
		if err != nil {
			dst.CloseWrite()
			return
		}
	}
}

// gate is open unless blackholed; wait blocks while it is shut.
type gate struct {
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

func (g *gate) init() {
	g.open = make(chan struct{})
	close(g.open)
}

func (g *gate) set(shut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	isOpen := closedChan(g.open)
	switch {
	case shut && isOpen:
		g.open = make(chan struct{})
	case !shut && !isOpen:
		close(g.open)
	}
}

// wait reports whether the gate opened before done closed.
func (g *gate) wait(done <-chan struct{}) bool {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-done:
		return false
	}
}

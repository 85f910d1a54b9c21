package raw

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/sockerr"
	"github.com/postsockets/postsockets/internal/srcaddr"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// QUIC is QUIC with a chosen ALPN and no hello of its own. Each transient
// is one bidirectional stream; Fork opens a new stream on the same
// connection.
type QUIC struct {
	// ALPN is offered to the server and must not be empty (QUIC requires
	// one); nil means Security.NextProtos.
	ALPN []string
	// Framer delimits messages on each stream; nil means
	// framer.LengthPrefix.
	Framer framer.Framer
}

// Name returns "raw-quic".
func (*QUIC) Name() string { return NameQUIC }

// Features include psi.Encrypted and psi.Fork.
func (*QUIC) Features() psi.Features { return streamFeatures | psi.Encrypted | psi.Fork }

// Network returns "udp".
func (*QUIC) Network() string { return "udp" }

// Dial connects to remote, verifies the server under cfg.Security and
// opens the first stream.
func (s *QUIC) Dial(ctx context.Context, remote netip.AddrPort, cfg *psi.Config) (psi.Transient, error) {
	tc, err := clientTLS(&cfg.Security, remote, s.ALPN)
	if err != nil {
		return nil, err
	}
	if len(tc.NextProtos) == 0 {
		return nil, post.Errorf(post.ErrInvalid, "raw-quic needs an ALPN")
	}
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Local))
	if err != nil {
		return nil, sockerr.Bind(err)
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.Handshake())
	defer cancel()
	qc, err := quic.Dial(hctx, pc, net.UDPAddrFromAddrPort(remote), tc,
		&quic.Config{MaxIdleTimeout: cfg.Idle(), KeepAlivePeriod: cfg.KeepAlive})
	if err != nil {
		pc.Close()
		return nil, handshakeError(ctx, err)
	}
	cs := qc.ConnectionState().TLS
	q := &quicConn{qc: qc, pc: pc, f: s.Framer, cfg: cfg,
		id: cfg.Security.PeerIdentity(cs.PeerCertificates, false),
		// The socket is bound to the unspecified address; the path
		// names the one the system sends from to the server.
		path: post.Path{Local: srcaddr.For(addrPort(qc.LocalAddr()), addrPort(qc.RemoteAddr())),
			Remote: addrPort(qc.RemoteAddr()), Active: true}}
	t, err := q.open(ctx)
	if err != nil {
		q.release(true)
		return nil, err
	}
	return t, nil
}

// Listen is not supported.
func (*QUIC) Listen(context.Context, netip.AddrPort, *psi.Config) (psi.Listener, error) {
	return nil, post.Errorf(post.ErrNotSupported, "raw-quic only dials")
}

// quicConn is one QUIC connection shared by the streams on it; the last
// stream to close closes it.
type quicConn struct {
	qc   *quic.Conn
	pc   net.PacketConn
	f    framer.Framer
	cfg  *psi.Config
	id   psi.Identity
	path post.Path

	mu   sync.Mutex
	refs int
}

func (q *quicConn) open(ctx context.Context) (psi.Transient, error) {
	q.mu.Lock()
	q.refs++
	q.mu.Unlock()
	st, err := q.qc.OpenStreamSync(ctx)
	if err != nil {
		q.release(false)
		return nil, post.Errorf(post.ErrReset, "raw-quic: open stream: %v", err)
	}
	t := newStreamOn(NameQUIC, (*QUIC)(nil).Features(), st, q.f, q.cfg, q.id)
	t.path = q.path
	t.fork = q.open
	t.close = func(abort bool) error {
		st.CancelRead(0) // unread inbound data is discarded
		if abort {
			st.CancelWrite(0)
		}
		q.release(abort)
		return nil
	}
	return t, nil
}

// release drops one stream's hold on the connection.
func (q *quicConn) release(abort bool) {
	q.mu.Lock()
	q.refs--
	last := q.refs <= 0
	q.mu.Unlock()
	if !last {
		return
	}
	if abort {
		q.shut()
		return
	}
	// Give what the last stream sent one linger to arrive: quic-go cannot
	// tell when a stream's data is acknowledged, and closing the
	// connection at once would drop what is still in flight.
	time.AfterFunc(q.cfg.LingerTime(), q.shut)
}

func (q *quicConn) shut() {
	q.qc.CloseWithError(0, "")
	q.pc.Close()
}

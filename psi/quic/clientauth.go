package quic

import (
	"context"
	"crypto/tls"
	"sync"
	"sync/atomic"

	quicgo "github.com/quic-go/quic-go"
)

// clientAuth lets a dialler learn whether the server accepted its
// certificate. A TLS 1.3 client finishes its handshake before the server
// has checked the client's certificate, so without it a rejected client
// would only learn of the rejection on first use. The server sends its
// session ticket (with HANDSHAKE_DONE) once it has accepted the client,
// and closes the connection with a TLS alert if it has not.
type clientAuth struct {
	keeps    bool        // a session cache keeps the tickets
	asked    atomic.Bool // the server sent a CertificateRequest
	accepted chan struct{}
	once     sync.Once
}

// watchClientAuth hooks tc so the dial can wait for the server's verdict.
func watchClientAuth(tc *tls.Config) *clientAuth {
	w := &clientAuth{accepted: make(chan struct{})}
	certs := tc.Certificates
	tc.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		w.asked.Store(true)
		for i := range certs {
			if cri.SupportsCertificate(&certs[i]) == nil {
				return &certs[i], nil
			}
		}
		return new(tls.Certificate), nil // no certificate; the server decides
	}
	w.keeps = tc.ClientSessionCache != nil
	tc.ClientSessionCache = ticketSignal{c: tc.ClientSessionCache, w: w}
	return w
}

// wait returns once the server accepted the client, or with the reason it
// did not. It returns at once if the server asked for no certificate.
func (w *clientAuth) wait(ctx context.Context, qc *quicgo.Conn) error {
	if !w.asked.Load() {
		return nil
	}
	select {
	case <-w.accepted:
		return nil
	case <-qc.Context().Done():
		return mapError(context.Cause(qc.Context()))
	case <-ctx.Done():
		return dialError(ctx, ctx.Err())
	}
}

// ticket returns a channel closed when the server's first session ticket
// arrives, or nil if no cache keeps tickets.
func (w *clientAuth) ticket() <-chan struct{} {
	if !w.keeps {
		return nil
	}
	return w.accepted
}

// ticketSignal is a session cache that reports the server's first ticket.
type ticketSignal struct {
	c tls.ClientSessionCache // may be nil
	w *clientAuth
}

func (t ticketSignal) Get(key string) (*tls.ClientSessionState, bool) {
	if t.c == nil {
		return nil, false
	}
	return t.c.Get(key)
}

// Put stores the ticket before it reports it: a Close that awaitTicket
// let go on the report must leave the ticket in the cache for the next
// dial.
func (t ticketSignal) Put(key string, cs *tls.ClientSessionState) {
	if t.c != nil {
		t.c.Put(key, cs)
	}
	if cs != nil {
		t.w.once.Do(func() { close(t.w.accepted) })
	}
}

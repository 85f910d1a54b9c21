package httpcarrier

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/post"
)

// tunnelRequest reports whether req asks for a byte stream after its
// head: CONNECT, or an Upgrade (Connection: upgrade with an Upgrade
// field). Only a request without a body can: its message continues with
// the client's bytes.
func tunnelRequest(req *http.Request) bool {
	if req.ContentLength > 0 || !noBody(req.Body) || len(req.Trailer) > 0 {
		return false
	}
	if req.Method == http.MethodConnect {
		return true
	}
	return upgradeProtocol(req.Header) != ""
}

// upgradeProtocol returns the Upgrade field of h if its Connection field
// names upgrade, or "".
func upgradeProtocol(h http.Header) string {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), "upgrade") {
				return strings.Join(h["Upgrade"], ", ")
			}
		}
	}
	return ""
}

// switched reports whether resp turns the fork of req into a tunnel: 101
// to an Upgrade, or 2xx to CONNECT.
func switched(req *http.Request, resp *http.Response) bool {
	if req.Method == http.MethodConnect {
		return resp.StatusCode >= 200 && resp.StatusCode < 300
	}
	return resp.StatusCode == http.StatusSwitchingProtocols && resp.Header.Get("Upgrade") != ""
}

// tunnel is the byte stream on a fork after the head of a switched
// exchange. Reading takes the rest of the peer's message (its end is
// io.EOF); writing extends this side's message, and CloseWrite ends it.
// It is a net.Conn, and resp.Body of a switched response (an
// io.ReadWriteCloser, as net/http gives for 101).
type tunnel struct {
	f       *carrier.Carrier
	base    context.Context // bounds reads and writes
	onClose func()

	rmu  sync.Mutex
	pre  []byte
	rend bool

	wmu    sync.Mutex
	mw     *carrier.MessageWriter // nil until the first write (server)
	wctx   context.Context
	wstop  context.CancelFunc // abandons the message: write deadline
	wended bool

	dmu      sync.Mutex
	rdl, wdl time.Time
	rcancel  context.CancelFunc // of the Read in progress
	rtimer   *time.Timer

	closeOnce sync.Once
	closeErr  error
}

var (
	_ net.Conn           = (*tunnel)(nil)
	_ io.ReadWriteCloser = (*tunnel)(nil)
)

// newTunnel returns the stream on f. pre and end are what was read of
// the peer's message after its head; mw, if set, is this side's open
// message, written with wctx (cancelled by wstop).
func newTunnel(base context.Context, f *carrier.Carrier, pre []byte, end bool, mw *carrier.MessageWriter, wctx context.Context, wstop context.CancelFunc) *tunnel {
	if wctx == nil {
		wctx, wstop = context.WithCancel(base)
	}
	return &tunnel{f: f, base: base, pre: pre, rend: end, mw: mw, wctx: wctx, wstop: wstop}
}

func (t *tunnel) Read(p []byte) (int, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	if len(t.pre) > 0 {
		n := copy(p, t.pre)
		t.pre = t.pre[n:]
		return n, nil
	}
	if t.rend {
		return 0, io.EOF
	}
	ctx, cancel := context.WithCancel(t.base)
	defer cancel()
	t.dmu.Lock()
	if !t.rdl.IsZero() && !time.Now().Before(t.rdl) {
		t.dmu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	t.rcancel = cancel
	if !t.rdl.IsZero() {
		t.rtimer = time.AfterFunc(time.Until(t.rdl), cancel)
	}
	t.dmu.Unlock()
	m, err := t.f.Ready(ctx, carrier.ReadyOptions{Max: len(p), Buffer: p})
	t.dmu.Lock()
	t.rcancel = nil
	if t.rtimer != nil {
		t.rtimer.Stop()
		t.rtimer = nil
	}
	t.dmu.Unlock()
	if err != nil {
		if ctx.Err() != nil && t.base.Err() == nil {
			return 0, os.ErrDeadlineExceeded // bytes read are kept for the next call
		}
		return 0, err
	}
	n := copy(p, m.Content)
	if m.End {
		t.rend = true
		if n == 0 {
			return 0, io.EOF
		}
	}
	return n, nil
}

func (t *tunnel) Write(p []byte) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wended {
		return 0, post.Errorf(post.ErrClosed, "httpcarrier: write after CloseWrite")
	}
	t.dmu.Lock()
	dl := t.wdl
	t.dmu.Unlock()
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, os.ErrDeadlineExceeded
	}
	if err := t.open(); err != nil {
		return 0, err
	}
	if !dl.IsZero() {
		// A write cut by its deadline abandons the message: the stream
		// is broken afterwards, as a TLS connection is.
		stop := time.AfterFunc(time.Until(dl), t.wstop)
		defer stop.Stop()
	}
	var n int
	for len(p) > 0 {
		k := min(len(p), partSize)
		if _, err := t.mw.Write(p[:k]); err != nil {
			if !dl.IsZero() && !time.Now().Before(dl) {
				return n, os.ErrDeadlineExceeded
			}
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// open starts this side's message; t.wmu is held.
func (t *tunnel) open() error {
	if t.mw != nil {
		return nil
	}
	mw, err := t.f.NewMessageWriter(t.wctx, post.Properties{})
	if err != nil {
		return err
	}
	t.mw = mw
	return nil
}

// CloseWrite ends this direction: the peer reads io.EOF once it has the
// rest.
func (t *tunnel) CloseWrite() error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.closeWrite()
}

func (t *tunnel) closeWrite() error {
	if t.wended {
		return nil
	}
	t.wended = true
	if err := t.open(); err != nil {
		return err
	}
	return t.mw.Close()
}

// Close ends this side's message, if it is open, and closes the fork,
// waiting (up to the Carrier's linger) until the peer has it all. With a
// Write in progress it aborts the fork instead.
func (t *tunnel) Close() error {
	t.closeOnce.Do(func() {
		if t.wmu.TryLock() {
			err := t.closeWrite()
			t.wmu.Unlock()
			if err != nil {
				t.f.Abort()
				t.closeErr = err
			} else {
				t.closeErr = t.f.Close()
			}
		} else {
			t.f.Abort()
			t.closeErr = post.Errorf(post.ErrClosed, "httpcarrier: closed during a write")
		}
		t.wstop()
		if t.onClose != nil {
			t.onClose()
		}
	})
	return t.closeErr
}

func (t *tunnel) LocalAddr() net.Addr {
	return carrier.Addr{Stack: t.f.Stack(), AddrPort: t.f.Path().Local}
}

func (t *tunnel) RemoteAddr() net.Addr {
	return carrier.Addr{Stack: t.f.Stack(), AddrPort: t.f.Path().Remote}
}

func (t *tunnel) SetDeadline(d time.Time) error {
	t.SetReadDeadline(d)
	return t.SetWriteDeadline(d)
}

// SetReadDeadline applies to a Read in progress too.
func (t *tunnel) SetReadDeadline(d time.Time) error {
	t.dmu.Lock()
	defer t.dmu.Unlock()
	t.rdl = d
	if t.rcancel == nil {
		return nil
	}
	if t.rtimer != nil {
		t.rtimer.Stop()
		t.rtimer = nil
	}
	if !d.IsZero() {
		t.rtimer = time.AfterFunc(time.Until(d), t.rcancel)
	}
	return nil
}

// SetWriteDeadline applies from the next Write on.
func (t *tunnel) SetWriteDeadline(d time.Time) error {
	t.dmu.Lock()
	defer t.dmu.Unlock()
	t.wdl = d
	return nil
}

// errNotTunnel is Hijack's error for a request that does not switch.
var errNotTunnel = post.Errorf(post.ErrNotSupported, "httpcarrier: only Upgrade and CONNECT requests can be hijacked")

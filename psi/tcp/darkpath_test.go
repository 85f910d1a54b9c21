package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/psitest"
)

// Short timeouts for the dark-path tests, long enough that a loaded host
// under the race detector does not take a stall for a dead peer.
const (
	darkIdle      = 2500 * time.Millisecond
	darkKeepAlive = darkIdle / 4
)

// TestDialThroughBlackHole: a dial whose path ends at a middlebox that
// accepts the TCP connection, acknowledges everything and forwards
// nothing fails at the handshake timeout with an error wrapping
// post.ErrTimeout.
func TestDialThroughBlackHole(t *testing.T) {
	hole := psitest.TCPRelay(t, netip.MustParseAddrPort("127.0.0.1:9"))
	hole.Darken()
	cfg := &psi.Config{HandshakeTimeout: time.Second, Security: psi.Security{RootCAs: testcert.Must().Pool}}
	done := make(chan error, 1)
	go func() {
		_, err := Stack{}.Dial(context.Background(), hole.Addr(), cfg)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, post.ErrTimeout) {
			t.Fatalf("dial through a black hole: %v, want an error wrapping post.ErrTimeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dial through a black hole did not end within 30 s (handshake timeout 1 s)")
	}
}

// darkPair dials a pair of transients through a TCP relay, with the
// dark-path timeouts on both ends.
func darkPair(t *testing.T, s Stack) (a, b psi.Transient, relay *psitest.Relay) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	certs := testcert.Must()
	tune := func(c *psi.Config) *psi.Config {
		c.IdleTimeout, c.KeepAlive = darkIdle, darkKeepAlive
		return c
	}
	ln, err := s.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"),
		tune(&psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	relay = psitest.TCPRelay(t, ln.Addr())
	a, err = s.Dial(ctx, relay.Addr(), tune(&psi.Config{Security: psi.Security{RootCAs: certs.Pool}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.(psi.Aborter).Abort(nil) })
	b, err = ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.(psi.Aborter).Abort(nil) })
	return a, b, relay
}

// darkBound is how long an end may take to declare a dark path's peer
// dead: the idle timeout with room for a loaded host.
const darkBound = 4*darkIdle + 2*time.Second

// await fails t unless ch yields within darkBound an error wrapping
// post.ErrTimeout.
func await(t *testing.T, what string, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		if !errors.Is(err, post.ErrTimeout) {
			t.Errorf("%s after the path went dark: %v, want an error wrapping post.ErrTimeout", what, err)
		}
	case <-time.After(darkBound):
		t.Errorf("%s did not end within %v of the path going dark", what, darkBound)
	}
}

// TestDarkPathReaders: once the relay between two idle ends goes dark
// (it still acknowledges and answers keep-alives), a waiting
// ReadMessage on either end fails within about the idle timeout with an
// error wrapping post.ErrTimeout, and so do a later write, Flush and
// Close. Before the liveness frames both reads waited for good.
func TestDarkPathReaders(t *testing.T) {
	a, b, relay := darkPair(t, Stack{})
	ctx := context.Background()
	if err := a.WriteMessage(ctx, []byte("hello"), true, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, end, err := b.ReadMessage(ctx, buf); err != nil || !end || string(buf[:n]) != "hello" {
		t.Fatalf("before: %q %v %v", buf[:n], end, err)
	}
	relay.Darken()
	reads := map[string]chan error{"A's read": make(chan error, 1), "B's read": make(chan error, 1)}
	for name, tr := range map[string]psi.Transient{"A's read": a, "B's read": b} {
		go func() {
			_, _, err := tr.ReadMessage(ctx, make([]byte, 64))
			reads[name] <- err
		}()
	}
	for name, ch := range reads {
		await(t, name, ch)
	}
	for name, tr := range map[string]psi.Transient{"A": a, "B": b} {
		if err := tr.WriteMessage(ctx, []byte("anyone?"), true, nil); !errors.Is(err, post.ErrTimeout) {
			t.Errorf("%s's write after its peer was declared dead: %v, want post.ErrTimeout", name, err)
		}
		if err := tr.(psi.Flusher).Flush(ctx); !errors.Is(err, post.ErrTimeout) {
			t.Errorf("%s's Flush after its peer was declared dead: %v, want post.ErrTimeout", name, err)
		}
		if err := tr.Close(); !errors.Is(err, post.ErrTimeout) {
			t.Errorf("%s's Close after its peer was declared dead: %v, want post.ErrTimeout", name, err)
		}
	}
}

// TestDarkPathWriter: a writer whose relay went dark writes on into it,
// every write acknowledged by the relay's kernel, and reads nothing; its
// transient fails within about the idle timeout with an error wrapping
// post.ErrTimeout, its writes and Close say so, and the other end, which
// read nothing, finds the same once it reads. Before the liveness
// frames the writer went on for good and its Close returned nil.
func TestDarkPathWriter(t *testing.T) {
	a, b, relay := darkPair(t, Stack{})
	ctx := context.Background()
	if err := a.WriteMessage(ctx, []byte("hello"), true, nil); err != nil {
		t.Fatal(err)
	}
	relay.Darken()
	writes := make(chan error, 1)
	go func() {
		msg := make([]byte, 1<<10)
		for {
			if err := a.WriteMessage(ctx, msg, true, nil); err != nil {
				writes <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	await(t, "A's writes", writes)
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	await(t, "A's Close", closed)
	// B, which read nothing, finds the silence too once it reads (its
	// window was open: the silence counted).
	read := make(chan error, 1)
	go func() {
		for {
			if _, _, err := b.ReadMessage(ctx, make([]byte, 64)); err != nil {
				read <- err
				return
			}
		}
	}()
	await(t, "B's read", read)
}

// TestLivePathPausedReader: through a relay that forwards, a reader may
// pause for several idle timeouts, its queue full and the writer
// blocked, and both ends stay up; so do two ends that send nothing.
func TestLivePathPausedReader(t *testing.T) {
	a, b, _ := darkPair(t, Stack{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const size, msg = 8 << 20, 64 << 10
	written := make(chan error, 1)
	go func() {
		for off := 0; off < size; off += msg {
			if err := a.WriteMessage(ctx, make([]byte, msg), true, nil); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	time.Sleep(3 * darkIdle)
	buf := make([]byte, msg)
	for off := 0; off < size; off += msg {
		for {
			_, end, err := b.ReadMessage(ctx, buf)
			if err != nil {
				t.Fatalf("after the pause, message at %d: %v", off, err)
			}
			if end {
				break
			}
		}
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * darkIdle) // both idle
	if err := a.WriteMessage(ctx, []byte("still here"), true, nil); err != nil {
		t.Fatal(err)
	}
	if n, end, err := b.ReadMessage(ctx, buf); err != nil || !end || string(buf[:n]) != "still here" {
		t.Fatalf("after idling: %q %v %v", buf[:n], end, err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("A's Close: %v", err)
	}
	if _, _, err := b.ReadMessage(ctx, buf); err != io.EOF {
		t.Errorf("B's read after A's Close: %v, want io.EOF", err)
	}
}

// TestDarkPathPausedReader: the relay goes dark while the reader is
// paused on a full window and the writer blocked. The writer, whose
// bytes the relay now takes and drops, fails within about the idle
// timeout; the paused reader's shut window excuses its silence while it
// stays paused, and once it reads what it holds it finds the silence too.
func TestDarkPathPausedReader(t *testing.T) {
	a, b, relay := darkPair(t, Stack{})
	ctx := context.Background()
	writes := make(chan error, 1)
	go func() {
		msg := make([]byte, 64<<10)
		for {
			if err := a.WriteMessage(ctx, msg, true, nil); err != nil {
				writes <- err
				return
			}
		}
	}()
	time.Sleep(time.Second) // B's window and the relay's fill; A blocks
	relay.Darken()
	await(t, "A's writes", writes)
	read := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, _, err := b.ReadMessage(ctx, buf); err != nil {
				read <- err
				return
			}
		}
	}()
	await(t, "B's reads", read)
}

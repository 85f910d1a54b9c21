package psitest

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// testDarkPath: once the middlebox between two idle ends goes dark, a
// waiting ReadMessage on either end fails within about the idle timeout
// with an error wrapping post.ErrTimeout (the peer is unanswered, though
// a TCP relay's kernel acknowledges everything), and neither end's
// Close returns nil. A paused reader's connection staying up is
// PausedReader's.
func testDarkPath(t *testing.T, mp MakePair) {
	p := mp(t, short)
	if p.DarkenPath == nil {
		t.Skip("pair has no middlebox to darken")
	}
	ctx := testContext(t, 60*time.Second)
	if err := p.A.WriteMessage(ctx, []byte("hello"), true, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := readMsg(ctx, p.B, 64); err != nil || string(m) != "hello" {
		t.Fatalf("before: %q, %v", m, err)
	}
	p.DarkenPath()
	bound := 4*idleTimeout + 2*time.Second
	waitA := start(func() error { _, _, err := p.A.ReadMessage(ctx, make([]byte, 64)); return err })
	waitB := start(func() error { _, _, err := p.B.ReadMessage(ctx, make([]byte, 64)); return err })
	for _, r := range []struct {
		name string
		wait func(*testing.T, time.Duration, string) error
	}{{"A", waitA}, {"B", waitB}} {
		err := r.wait(t, bound, r.name+"'s ReadMessage on a dark path")
		if err == nil || err == io.EOF || !errors.Is(err, post.ErrTimeout) {
			t.Errorf("%s's read on a dark path: %v, want an error wrapping post.ErrTimeout", r.name, err)
		}
	}
	for name, tr := range map[string]psi.Transient{"A": p.A, "B": p.B} {
		if err := tr.WriteMessage(ctx, []byte("anyone?"), true, nil); err == nil {
			t.Logf("%s's write after its peer was declared dead returned nil", name)
		}
		if err := within(t, linger+time.Second, name+"'s Close", tr.Close); err == nil {
			t.Errorf("%s's Close on a dark path returned nil", name)
		}
	}
}

package association_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// weakStack cannot require client certificates.
type weakStack struct{ fakeStack }

func (*weakStack) CheckSecurity(s *psi.Security, server bool) error {
	if server && s.ClientAuth {
		return post.Errorf(post.ErrNotSupported, "no client certificates")
	}
	return nil
}

func TestWeakStackLeftOut(t *testing.T) {
	weak := &weakStack{fakeStack{name: "weak", network: "udp", dial: ok}}
	strong := &fakeStack{name: "strong", network: "udp", dial: ok}
	var logs bytes.Buffer
	cfg := association.Config{
		Stacks:   []psi.Stack{weak, strong},
		Security: psi.Security{ClientAuth: true},
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	}
	a, err := association.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.ListenStacks()
	if err != nil || len(got) != 1 || got[0] != strong {
		t.Fatalf("ListenStacks: %v, %v", got, err)
	}
	if !strings.Contains(logs.String(), "stack=weak") || !strings.Contains(logs.String(), "no client certificates") {
		t.Fatalf("no logged reason: %q", logs.String())
	}
	// Dialling, ClientAuth asks nothing of the stack.
	if got, err := a.Stacks(); err != nil || len(got) != 2 {
		t.Fatalf("Stacks: %v, %v", got, err)
	}
	// With no stack left, the reasons are the error.
	cfg.Stacks = []psi.Stack{weak}
	a, err = association.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ListenStacks(); !errors.Is(err, post.ErrNoCandidates) || !strings.Contains(err.Error(), "no client certificates") {
		t.Fatalf("got %v", err)
	}
}

// An authentication failure ends the attempts still running, which share
// its trust settings, and reports what to configure.
func TestRaceEndsOnAuthFailure(t *testing.T) {
	slow := &fakeStack{name: "fsp", network: "udp", dial: hang}
	bad := &fakeStack{name: "quic", network: "udp", dial: func(context.Context, netip.AddrPort) error {
		return post.Errorf(post.ErrAuthentication, "wrong key")
	}}
	never := &fakeStack{name: "tcp", network: "udp", dial: ok} // started after quic
	// quic fails as it starts; the delay is the race's time to see that
	// before it would start the next attempt.
	a := newAssoc(t, policy.Context{AttemptDelay: 250 * time.Millisecond}, slow, bad, never)
	// The caller's context never ends: a race that waited for the hanging
	// attempt would not return.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := a.Establish(ctx)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second): // a hang, not a speed limit
		t.Fatal("the race did not end on the authentication failure")
	}
	if !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("got %v, want ErrAuthentication", err)
	}
	if !strings.Contains(err.Error(), "Security.RootCAs") {
		t.Fatalf("error does not say what trust to configure: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second) // a hang, not a speed limit
	defer wcancel()
	if err := a.Wait(wctx); err != nil {
		t.Fatalf("the hanging attempt was not ended: %v", err)
	}
	if n := never.attempts.Load(); n != 0 {
		t.Fatalf("%d attempts started after the authentication failure", n)
	}
}

package main

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bob: got HELLO BOB", "bob: got THIS IS FSP OVER ICE", "over fsp"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestChat runs two chat loops: lines typed at alice appear at bob, and
// alice's end of input ends both.
func TestChat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs := &rendezvous.Server{}
	ts := httptest.NewServer(rs)
	defer ts.Close()
	defer rs.Close()
	alice, bob, err := pair(ctx, ts.URL, []byte("sixteen bytes at least"))
	if err != nil {
		t.Fatal(err)
	}
	var bobOut syncBuffer
	bobDone := make(chan error, 1)
	bobIn, bobInW := io.Pipe()
	defer bobInW.Close()
	go func() { bobDone <- chat(ctx, bob, "alice", bobIn, &bobOut) }()
	if err := chat(ctx, alice, "bob", strings.NewReader("first line\nsecond line\n"), io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := <-bobDone; err != nil {
		t.Fatal(err)
	}
	if got, want := bobOut.String(), "alice: first line\nalice: second line\n"; got != want {
		t.Fatalf("bob printed %q, want %q", got, want)
	}
}

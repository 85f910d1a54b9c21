package main

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/post"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"alice is b", "bob is b", "bob: got HELLO BOB", "bob: got THIS IS FSP OVER ICE", "over fsp"} {
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
	rs := rendezvous.NewServer(rendezvous.Config{})
	ts := httptest.NewServer(rs)
	defer ts.Close()
	defer rs.Close()
	ka, kb := newKey(t), newKey(t)
	alice, bob, err := pair(ctx, ts.URL, ka, kb)
	if err != nil {
		t.Fatal(err)
	}
	// Each Carrier shows the other's verified key.
	for _, c := range []struct {
		c    *carrier.Carrier
		want rendezvous.PeerID
	}{{alice, kb.ID}, {bob, ka.ID}} {
		if p := c.c.Peer(); !p.Verified || rendezvous.IDFromPin(p.Pin) != c.want {
			t.Errorf("peer %+v, want verified %s", p, c.want)
		}
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

func newKey(t *testing.T) *rendezvous.Key {
	t.Helper()
	k, err := rendezvous.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestLoadKey: a key file is created on first use and read back after.
func TestLoadKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "key.pem")
	k1, err := loadKey(file, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	k2, err := loadKey(file, io.Discard)
	if err != nil || k2.ID != k1.ID {
		t.Fatalf("reloaded %v, %v; want %s", k2, err, k1.ID)
	}
	os.WriteFile(file, []byte("not a key"), 0o600)
	if _, err := loadKey(file, io.Discard); err == nil {
		t.Fatal("a bad key file was accepted")
	}
}

// TestImpostor: a peer with another key than the pinned one gets no
// carrier from bob, and bob gets none either.
func TestImpostor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs := rendezvous.NewServer(rendezvous.Config{})
	ts := httptest.NewServer(rs)
	defer ts.Close()
	defer rs.Close()
	ka, kb, km := newKey(t), newKey(t), newKey(t)
	// Bob expects alice's key; mallory offers its own under alice's
	// name, and the server refuses it.
	mcfg := config(km, "bob", kb.ID, true)
	mcfg.Local.Peer = string(ka.ID)
	mallory := make(chan error, 1)
	go func() {
		c, err := carrier.Initiate(ctx, post.Remote{Peer: "bob", Rendezvous: ts.URL}, mcfg)
		if err == nil {
			c.Close()
		}
		mallory <- err
	}()
	short, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if c, err := carrier.Initiate(short, post.Remote{Peer: "alice", Rendezvous: ts.URL}, config(kb, "alice", ka.ID, true)); err == nil {
		c.Close()
		t.Fatal("bob got a carrier with mallory")
	}
	if err := <-mallory; err == nil {
		t.Fatal("mallory got a carrier")
	}
}

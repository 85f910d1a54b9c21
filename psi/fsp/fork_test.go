package fsp

import (
	"bytes"
	"sync"
	"testing"

	"github.com/postsockets/postsockets/internal/netem"
)

func TestFork(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	const n = 4
	// Server side: echo every clone the client makes.
	go func() {
		for {
			f, err := s.AcceptFork(ctx)
			if err != nil {
				return
			}
			go func() {
				defer f.Close()
				for {
					m, err := f.ReceiveMessage(ctx)
					if err != nil || f.SendMessage(ctx, m) != nil {
						return
					}
				}
			}()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		f, err := c.Fork(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f.LocalALFID() == c.LocalALFID() {
			t.Fatal("clone shares the parent's ALFID")
		}
		wg.Go(func() {
			defer f.Close()
			msg := randBytes(300000 + i)
			// Zero round trips: data goes out with the MULTIPLY.
			if err := f.SendMessage(ctx, msg); err != nil {
				errs <- err
				return
			}
			got, err := f.ReceiveMessage(ctx)
			if err != nil || !bytes.Equal(got, msg) {
				errs <- err
			}
		})
	}
	// The parent keeps working alongside its clones.
	msg := randBytes(100000)
	go c.SendMessage(ctx, msg)
	if got, err := s.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, msg) {
		t.Fatal("parent:", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// And the other way: the server forks, the client accepts.
	sf, err := s.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	go sf.SendMessage(ctx, []byte("from server clone"))
	cf, err := c.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	if m, err := cf.ReceiveMessage(ctx); err != nil || string(m) != "from server clone" {
		t.Fatal(m, err)
	}
}

func TestForkAnnounceWithoutData(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	f, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	go sf.SendMessage(ctx, []byte("hello clone"))
	if m, err := f.ReceiveMessage(ctx); err != nil || string(m) != "hello clone" {
		t.Fatal(m, err)
	}
}

func TestForkLossy(t *testing.T) {
	c, s := lossyPair(t, netem.Config{Loss: 0.05, Reorder: 0.02, Duplicate: 0.02, Seed: 3})
	ctx := testContext(t)
	for range 3 {
		f, err := c.Fork(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msg := randBytes(1 << 20)
		go f.SendMessage(ctx, msg)
		sf, err := s.AcceptFork(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := sf.ReceiveMessage(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatal(err)
		}
		f.Close()
		sf.Close()
	}
}

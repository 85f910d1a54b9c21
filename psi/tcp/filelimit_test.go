package tcp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// TestConnsLeaveDescriptors: clients of one /24 cannot take the
// process's file descriptors. The open-file limit is lowered to 400 and
// each source may hold 32 connections (MaxConnsPerSource); eight
// addresses of 127.0.0.0/24 each open connections until refused, all
// accepted and held, then a client of 127.0.1.0/24 dials. Before, the
// eight could hold 256, more than the descriptors (about 195
// connections, both ends in this process), and the client's dial failed;
// now the listener holds at most half the limit (MaxConns' default), a
// /24 a quarter of that (50), and the client connects.
func TestConnsLeaveDescriptors(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil || old.Cur < 400 {
		t.Skipf("open-file limit %d (%v)", old.Cur, err)
	}
	lim := old
	lim.Cur = 400
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	l := testListener(t, Stack{MaxConnsPerSource: 32})
	var mu sync.Mutex
	var held []psi.Transient
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			psi.Abort(c, nil)
		}
	})
	go func() {
		for {
			s, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, s)
			mu.Unlock()
		}
	}()
	dial := func(from string) (psi.Transient, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		cfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}, Local: netip.MustParseAddrPort(from + ":0")}
		return Stack{}.Dial(ctx, l.Addr(), cfg)
	}
	attacker := 0
	for i := range 8 {
		from := fmt.Sprintf("127.0.0.%d", 2+i)
		for attacker < 400 {
			c, err := dial(from)
			if err != nil {
				if !errors.Is(err, post.ErrRefused) {
					t.Logf("%s: %v after %d connections", from, err, attacker)
				}
				break
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			attacker++
		}
	}
	c, err := dial("127.0.1.1")
	if err != nil {
		t.Fatalf("a client of another /24 failed: %v (127.0.0.0/24 held %d connections)", err, attacker)
	}
	c.Close()
	if want := 400 / 2 / 4; attacker > want {
		t.Fatalf("127.0.0.0/24 held %d connections, over its share of %d", attacker, want)
	}
}

package post_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

func TestRemoteHostPort(t *testing.T) {
	r := post.RemoteName("example.com:443")
	h, p, err := r.HostPort()
	if err != nil || h != "example.com" || p != 443 {
		t.Fatalf("%q %d %v", h, p, err)
	}
	if r.AuthName() != "example.com" {
		t.Fatal(r.AuthName())
	}
	for _, bad := range []string{"example.com", "x:99999", "x:port", ""} {
		if _, _, err := post.RemoteName(bad).HostPort(); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	r.Ports = map[string]uint16{"quic": 8443}
	if r.PortFor("quic", 443) != 8443 || r.PortFor("tcp", 443) != 443 {
		t.Fatal("PortFor")
	}
}

func TestErrors(t *testing.T) {
	err := &post.OpError{Op: "dial", Stack: "tcp", Path: "1.2.3.4:5", Err: post.Errorf(post.ErrRefused, "port %d", 5)}
	if !errors.Is(err, post.ErrRefused) {
		t.Fatal("errors.Is through OpError and Errorf")
	}
	var op *post.OpError
	if !errors.As(fmt.Errorf("wrapped: %w", err), &op) || op.Stack != "tcp" {
		t.Fatal("errors.As")
	}
	if got := err.Error(); got != "dial tcp 1.2.3.4:5: post: connection refused: port 5" {
		t.Fatal(got)
	}
	if !(&post.OpError{Err: post.ErrTimeout}).Timeout() {
		t.Fatal("Timeout")
	}
	// The same operation wrapped twice names itself once.
	again := &post.OpError{Op: "dial", Stack: "tcp", Path: "1.2.3.4:5", Err: err}
	if got := again.Error(); got != "dial tcp 1.2.3.4:5: post: connection refused: port 5" {
		t.Fatal(got)
	}
}

func TestDeadline(t *testing.T) {
	now := time.Now()
	p := post.Properties{Lifetime: time.Second}
	if d, ok := p.Deadline(now); !ok || !d.Equal(now.Add(time.Second)) {
		t.Fatal("deadline")
	}
	if _, ok := (&post.Properties{}).Deadline(now); ok {
		t.Fatal("no lifetime, no deadline")
	}
}

func ExampleErrorf() {
	err := post.Errorf(post.ErrMessageTooLarge, "%d bytes", 1<<30)
	fmt.Println(errors.Is(err, post.ErrMessageTooLarge), err)
	// Output: true post: message too large: 1073741824 bytes
}

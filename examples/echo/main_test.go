package main

import (
	"bytes"
	"context"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/psi"
)

// lockedBuffer collects what the demo's goroutines print.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDemo runs the demo and checks each step it reports.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	psk, err := loadPSK("demo", "", "")
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	if err := demo(ctx, &out, &carrier.Config{Security: psi.Security{PSK: psk}}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		`(?m)^server: listening on (fsp|quic|tcp) 127\.0\.0\.1:\d+$`,
		`(?m)^client: initiated over (fsp|quic|tcp) on .+ after \d+ attempt\(s\)$`,
		`(?m)^server: accepted a carrier over (fsp|quic|tcp) from 127\.0\.0\.1:\d+$`,
		`(?m)^client: message \d+ \(19 bytes\) (sent|acknowledged)$`,
		`(?m)^client: echo of 19 bytes: "hello, post sockets"$`,
		`(?m)^client: echo of 100000 bytes: "x{20}\.\.\.x{10}"$`,
		`(?m)^client: forked a carrier over (fsp|quic|tcp)$`,
		`(?m)^client: fork echo "via the fork"$`,
		`(?m)^client: message with a 1 ns lifetime: expired$`,
		`(?m)^demo: done$`,
	} {
		if !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("output lacks %s\n%s", want, got)
		}
	}
}

// TestNoBuiltInKey: a client must be given the key; the demo and a server
// make up a fresh random one each time.
func TestNoBuiltInKey(t *testing.T) {
	if _, err := loadPSK("client", "", ""); err == nil {
		t.Error("client without a key: no error")
	}
	a, _ := loadPSK("server", "", "")
	b, _ := loadPSK("server", "", "")
	if len(a) < 16 || bytes.Equal(a, b) {
		t.Errorf("server keys %x, %x: want fresh random keys", a, b)
	}
	if _, err := loadPSK("client", "00ff", ""); err == nil {
		t.Error("2-byte key accepted")
	}
}

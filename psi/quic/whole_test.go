package quic

import (
	"errors"
	"os"
	"testing"
)

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestWholeWriter: quic-go reports a deadline set after a write's last
// bytes were packed (the peer may have read them all and closed, so
// peerClosed set it) with every byte written; that write succeeded.
// TestConcurrentForks hit it under load on an echoing fork.
func TestWholeWriter(t *testing.T) {
	all := wholeWriter{writerFunc(func(p []byte) (int, error) { return len(p), os.ErrDeadlineExceeded })}
	if n, err := all.Write([]byte("abc")); n != 3 || err != nil {
		t.Fatalf("a write that handed every byte over: %d, %v", n, err)
	}
	short := wholeWriter{writerFunc(func(p []byte) (int, error) { return len(p) - 1, os.ErrDeadlineExceeded })}
	if _, err := short.Write([]byte("abc")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a short write: %v", err)
	}
}

package quic

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// FuzzStreamInput sends arbitrary bytes after a fork's header and checks
// that the receiving transient returns data no larger than what was sent
// and ends with io.EOF, ErrMalformed or ErrMessageTooLarge, never hanging.
func FuzzStreamInput(f *testing.F) {
	frame := func(p string, end bool) []byte {
		h := uint32(len(p))
		if end {
			h |= 1 << 31
		}
		return append(binary.BigEndian.AppendUint32(nil, h), p...)
	}
	f.Add([]byte{})
	f.Add(frame("hello", true))
	f.Add(append(frame("he", false), frame("llo", true)...))
	f.Add(frame("", true))
	f.Add(frame("truncated", true)[:7])
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})

	var st Stack
	scfg := serverConfig()
	scfg.MaxMessageSize = 1 << 16
	cli, srv, _ := pair(f, &st, scfg, clientConfig())
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cf, err := cli.Fork(ctx, psi.Wine)
		if err != nil {
			t.Fatal(err)
		}
		defer cf.Close()
		sf, err := srv.AcceptFork(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer sf.Close()
		raw := cf.(*Transient)
		raw.wmu.Lock()
		_, err = raw.ws.Write(b)
		raw.ws.Close()
		raw.werr = post.ErrClosed // the stream is finished
		raw.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1000)
		total := 0
		for {
			n, _, err := sf.ReadMessage(ctx, buf)
			total += n
			if total > len(b) {
				t.Fatalf("read %d bytes from %d sent", total, len(b))
			}
			if err == nil || errors.Is(err, framer.ErrAborted) {
				continue
			}
			if err != io.EOF && !errors.Is(err, post.ErrMalformed) && !errors.Is(err, post.ErrMessageTooLarge) {
				t.Fatalf("unexpected error %v", err)
			}
			break
		}
	})
}

package framer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/postsockets/postsockets/post"
)

// writeAll writes each message in parts of random sizes, flushing at the
// end of every message.
func writeAll(t testing.TB, w MessageWriter, msgs [][]byte, rng *rand.Rand) {
	t.Helper()
	for _, m := range msgs {
		for {
			n := len(m)
			if n > 0 && rng.IntN(3) > 0 {
				n = rng.IntN(len(m) + 1)
			}
			if err := w.WriteMessage(m[:n], n == len(m)); err != nil {
				t.Fatalf("WriteMessage: %v", err)
			}
			m = m[n:]
			if len(m) == 0 {
				break
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
}

// readAll reads messages until io.EOF with read buffers of random sizes.
func readAll(r MessageReader, rng *rand.Rand, maxBuf int) ([][]byte, error) {
	var msgs [][]byte
	var cur []byte
	buf := make([]byte, maxBuf)
	for {
		n, end, err := r.ReadMessage(buf[:1+rng.IntN(maxBuf)])
		cur = append(cur, buf[:n]...)
		if end {
			msgs = append(msgs, cur)
			cur = nil
		}
		if err != nil {
			if err == io.EOF && len(cur) == 0 {
				return msgs, nil
			}
			return msgs, err
		}
	}
}

func testMessages(rng *rand.Rand, line bool) [][]byte {
	sizes := []int{0, 1, 2, 3, 4, 5, 100, 4095, 4096, 16383, 16384, 16385, 32 << 10, 64<<10 - 4, 64 << 10, 64<<10 + 1, 200 << 10, 1 << 20}
	var msgs [][]byte
	for _, n := range sizes {
		m := make([]byte, n)
		for i := range m {
			m[i] = byte(rng.UintN(256))
			if line && (m[i] == '\r' || m[i] == '\n') {
				m[i] = 'x'
			}
		}
		msgs = append(msgs, m)
	}
	rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	return msgs
}

func equalMessages(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d: got %d bytes, want %d (contents differ)", i, len(got[i]), len(want[i]))
		}
	}
}

var framers = []Framer{LengthPrefix{}, Line{}}

func TestRoundTrip(t *testing.T) {
	wraps := map[string]func(io.Reader) io.Reader{
		"plain":   func(r io.Reader) io.Reader { return r },
		"half":    iotest.HalfReader,
		"onebyte": iotest.OneByteReader,
		"dataerr": iotest.DataErrReader,
		"bufioed": func(r io.Reader) io.Reader { return bufio.NewReaderSize(r, 16) },
	}
	for _, f := range framers {
		for name, wrap := range wraps {
			t.Run(f.Name()+"/"+name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, uint64(len(name))))
				msgs := testMessages(rng, f.Name() == "line")
				if name == "onebyte" {
					msgs = msgs[:8] // keep it quick
				}
				var stream bytes.Buffer
				writeAll(t, f.NewWriter(&stream), msgs, rng)
				got, err := readAll(f.NewReader(wrap(&stream), 0), rng, 70<<10)
				if err != nil {
					t.Fatal(err)
				}
				equalMessages(t, got, msgs)
			})
		}
	}
}

func TestLengthPrefixWire(t *testing.T) {
	var b bytes.Buffer
	w := LengthPrefix{}.NewWriter(&b)
	w.WriteMessage([]byte("ab"), false)
	w.WriteMessage([]byte("c"), true)
	w.WriteMessage(nil, true)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := []byte{0, 0, 0, 2, 'a', 'b', 0x80, 0, 0, 1, 'c', 0x80, 0, 0, 0}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("wire %x, want %x", b.Bytes(), want)
	}
}

func TestLineWire(t *testing.T) {
	var b bytes.Buffer
	w := Line{}.NewWriter(&b)
	w.WriteMessage([]byte("HELO "), false)
	w.WriteMessage([]byte("x"), true)
	w.WriteMessage(nil, true)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "HELO x\r\n\r\n" {
		t.Fatalf("wire %q", got)
	}
	if err := w.WriteMessage([]byte("a\nb"), true); !errors.Is(err, ErrLineContent) || !errors.Is(err, post.ErrInvalid) {
		t.Fatalf("LF in content: %v", err)
	}
}

func hdr(n int, last bool) []byte {
	h := uint32(n)
	if last {
		h |= endBit
	}
	return binary.BigEndian.AppendUint32(nil, h)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestLengthPrefixErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte
		max   int64
		msgs  int // complete messages before the error
		want  error
		isEOF bool
	}{
		{name: "empty", in: nil, isEOF: true},
		{name: "clean end", in: cat(hdr(1, true), []byte("x")), msgs: 1, isEOF: true},
		{name: "truncated header", in: []byte{0x80, 0}, want: post.ErrMalformed},
		{name: "truncated payload", in: cat(hdr(5, true), []byte("abc")), want: post.ErrMalformed},
		{name: "end after non-final part", in: cat(hdr(1, false), []byte("a")), want: post.ErrMalformed},
		{name: "end after empty part", in: hdr(0, false), want: post.ErrMalformed},
		{name: "over the limit streams", in: cat(hdr(11, true), make([]byte, 11)), max: 10, msgs: 1, isEOF: true},
		{name: "over the limit in parts", in: cat(hdr(6, false), make([]byte, 6), hdr(5, true), make([]byte, 5)), max: 10, msgs: 1, isEOF: true},
		{name: "abort outside a message", in: []byte{0xff, 0xff, 0xff, 0xff}, max: 1 << 20, want: post.ErrMalformed},
		{name: "aborted message", in: cat(hdr(2, false), []byte("ab"), []byte{0xff, 0xff, 0xff, 0xff}), want: post.ErrReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, 3))
			msgs, err := readAll(LengthPrefix{}.NewReader(bytes.NewReader(tt.in), tt.max), rng, 8)
			if len(msgs) != tt.msgs {
				t.Errorf("read %d messages, want %d", len(msgs), tt.msgs)
			}
			switch {
			case tt.isEOF && err != nil:
				t.Errorf("err = %v, want clean end", err)
			case !tt.isEOF && !errors.Is(err, tt.want):
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLineErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		max   int64
		msgs  int
		want  error
		isEOF bool
	}{
		{name: "empty", in: "", isEOF: true},
		{name: "empty lines", in: "\r\n\r\n", msgs: 2, isEOF: true},
		{name: "bare LF", in: "ab\ncd\r\n", want: post.ErrMalformed},
		{name: "CR without LF", in: "ab\rcd\r\n", want: post.ErrMalformed},
		{name: "unterminated", in: "abc", want: post.ErrMalformed},
		{name: "dangling CR", in: "abc\r", want: post.ErrMalformed},
		{name: "at limit", in: "abcd\r\n", max: 4, msgs: 1, isEOF: true},
		{name: "over the limit streams", in: "abcde\r\n", max: 4, msgs: 1, isEOF: true},
	}
	for _, tt := range tests {
		for _, bufSize := range []int{1, 3, 64} {
			t.Run(fmt.Sprintf("%s/%d", tt.name, bufSize), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(4, 5))
				msgs, err := readAll(Line{}.NewReader(strings.NewReader(tt.in), tt.max), rng, bufSize)
				if len(msgs) != tt.msgs {
					t.Errorf("read %d messages, want %d", len(msgs), tt.msgs)
				}
				switch {
				case tt.isEOF && err != nil:
					t.Errorf("err = %v, want clean end", err)
				case !tt.isEOF && !errors.Is(err, tt.want):
					t.Errorf("err = %v, want %v", err, tt.want)
				}
			})
		}
	}
}

// flakyReader returns os.ErrDeadlineExceeded before every other read, as a
// net.Conn whose read deadline passes does.
type flakyReader struct {
	r    io.Reader
	fail bool
}

func (f *flakyReader) Read(p []byte) (int, error) {
	f.fail = !f.fail
	if f.fail {
		return 0, os.ErrDeadlineExceeded
	}
	return f.r.Read(p)
}

func TestResumeAfterTimeout(t *testing.T) {
	for _, f := range framers {
		t.Run(f.Name(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(6, 7))
			msgs := testMessages(rng, f.Name() == "line")[:10]
			var stream bytes.Buffer
			writeAll(t, f.NewWriter(&stream), msgs, rng)
			r := f.NewReader(bufio.NewReaderSize(iotest.OneByteReader(&flakyReader{r: &stream}), 16), 0)
			var got [][]byte
			var cur []byte
			buf := make([]byte, 100)
			timeouts := 0
			for {
				n, end, err := r.ReadMessage(buf)
				cur = append(cur, buf[:n]...)
				if end {
					got = append(got, cur)
					cur = nil
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					timeouts++
					continue
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if timeouts == 0 {
				t.Fatal("no timeouts injected")
			}
			equalMessages(t, got, msgs)
		})
	}
}

// recorder records the size of every write and whether it aliased src.
type recorder struct {
	sizes   []int
	aliased []bool
	src     []byte
	out     bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	a := false
	if len(p) > 0 && len(r.src) > 0 {
		a = &p[len(p)-1] == &r.src[len(r.src)-1]
	}
	r.aliased = append(r.aliased, a)
	return r.out.Write(p)
}

// A large part is written from the caller's slice, and every write but the
// last is a whole number of TLS records, so no tiny record carries the
// header alone.
func TestLengthPrefixLargePart(t *testing.T) {
	for _, prefix := range []int{0, 1, 100, 16380, 16381, 40000} {
		t.Run(fmt.Sprint(prefix), func(t *testing.T) {
			big := make([]byte, 1<<20)
			for i := range big {
				big[i] = byte(i * 7)
			}
			rec := &recorder{src: big}
			w := LengthPrefix{}.NewWriter(rec)
			if prefix > 0 {
				if err := w.WriteMessage(make([]byte, prefix), true); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.WriteMessage(big, true); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if len(rec.sizes) < 2 || !rec.aliased[len(rec.aliased)-1] {
				t.Fatalf("writes %v aliased %v: large part was copied", rec.sizes, rec.aliased)
			}
			for _, n := range rec.sizes[:len(rec.sizes)-1] {
				if n%recordSize != 0 {
					t.Fatalf("writes %v: %d is not a multiple of %d", rec.sizes, n, recordSize)
				}
			}
			msgs, err := readAll(LengthPrefix{}.NewReader(&rec.out, 0), rand.New(rand.NewPCG(1, 1)), 1<<16)
			if err != nil {
				t.Fatal(err)
			}
			want := [][]byte{big}
			if prefix > 0 {
				want = [][]byte{make([]byte, prefix), big}
			}
			equalMessages(t, msgs, want)
		})
	}
}

// Small messages are gathered into one write per Flush.
func TestLengthPrefixCoalesces(t *testing.T) {
	rec := &recorder{}
	w := LengthPrefix{}.NewWriter(rec)
	for range 100 {
		if err := w.WriteMessage(make([]byte, 64), true); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(rec.sizes) != 1 || rec.sizes[0] != 100*68 {
		t.Fatalf("writes %v, want one of %d bytes", rec.sizes, 100*68)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrClosedPipe
	}
	f.n--
	return len(p), nil
}

func TestWriterErrorSticks(t *testing.T) {
	w := LengthPrefix{}.NewWriter(&failWriter{n: 1})
	if err := w.WriteMessage(make([]byte, 1<<20), true); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("first large write: %v", err)
	}
	if err := w.WriteMessage([]byte("x"), true); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write after failure: %v", err)
	}
	if err := w.Flush(); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("flush after failure: %v", err)
	}
}

// checkStream reads arbitrary bytes as a stream and checks that the reader
// terminates, honours the limit, and never returns more than it was given.
func checkStream(t *testing.T, f Framer, data []byte, max int64, rng *rand.Rand) {
	r := f.NewReader(bytes.NewReader(data), max)
	buf := make([]byte, 1+rng.IntN(64))
	var total, inMsg int64
	for i := 0; ; i++ {
		if i > 2*len(data)+10 {
			t.Fatalf("reader did not finish after %d calls on %d bytes", i, len(data))
		}
		n, end, err := r.ReadMessage(buf[:1+rng.IntN(len(buf))])
		if n < 0 || n > len(buf) {
			t.Fatalf("n = %d", n)
		}
		total += int64(n)
		inMsg += int64(n)
		if end {
			inMsg = 0
		}
		if errors.Is(err, post.ErrReset) {
			inMsg = 0 // an aborted message; the next one follows
			continue
		}
		if err != nil {
			if err != io.EOF && !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			// Errors stick.
			if _, _, err2 := r.ReadMessage(buf); err2 == nil {
				t.Fatalf("read after %v succeeded", err)
			}
			break
		}
	}
	if total > int64(len(data)) {
		t.Fatalf("delivered %d bytes from %d", total, len(data))
	}
}

// splitMessages cuts data into messages at points chosen by rng.
func splitMessages(data []byte, rng *rand.Rand, line bool) [][]byte {
	var msgs [][]byte
	for len(data) > 0 {
		n := rng.IntN(len(data) + 1)
		m := bytes.Clone(data[:n])
		if line {
			for i, c := range m {
				if c == '\r' || c == '\n' {
					m[i] = '.'
				}
			}
		}
		msgs = append(msgs, m)
		data = data[n:]
	}
	return msgs
}

func fuzzFramer(f *testing.F, fr Framer, seeds [][]byte) {
	for i, s := range seeds {
		f.Add(s, uint64(i), int64(0))
		f.Add(s, uint64(i), int64(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, max int64) {
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		if max < 0 {
			max = 0
		}
		checkStream(t, fr, data, max, rng)

		msgs := splitMessages(data, rng, fr.Name() == "line")
		var stream bytes.Buffer
		var w MessageWriter = fr.NewWriter(&stream)
		if hb, ok := fr.(Heartbeater); ok {
			// Heartbeats between parts and messages change nothing.
			w = &beatWriter{MessageWriter: w, beat: hb.Heartbeat(), to: &stream, rng: rng}
		}
		writeAll(t, w, msgs, rng)
		got, err := readAll(fr.NewReader(iotest.HalfReader(&stream), 0), rng, 1+rng.IntN(100))
		if err != nil {
			t.Fatal(err)
		}
		equalMessages(t, got, msgs)
	})
}

// beatWriter writes a heartbeat after some of its parts.
type beatWriter struct {
	MessageWriter
	beat []byte
	to   io.Writer
	rng  *rand.Rand
}

func (w *beatWriter) WriteMessage(p []byte, end bool) error {
	if err := w.MessageWriter.WriteMessage(p, end); err != nil {
		return err
	}
	if w.rng.IntN(3) > 0 {
		return nil
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := w.to.Write(w.beat)
	return err
}

// TestLengthPrefixHeartbeat: the reader skips heartbeats between
// messages, inside one and before an abort marker, and a stream that
// ends after one between messages ends in order. Fails on the reader
// before heartbeats, which took one for the header of a 2 GiB part.
func TestLengthPrefixHeartbeat(t *testing.T) {
	beat := LengthPrefix{}.Heartbeat()
	stream := cat(beat, hdr(2, false), []byte("ab"), beat, beat, hdr(1, true), []byte("c"),
		beat, hdr(1, false), []byte("x"), beat, []byte{0xff, 0xff, 0xff, 0xff}, beat, hdr(0, true), beat)
	r := LengthPrefix{}.NewReader(bytes.NewReader(stream), 0)
	var got []string
	var cur []byte
	buf := make([]byte, 8)
	for {
		n, end, err := r.ReadMessage(buf)
		cur = append(cur, buf[:n]...)
		if errors.Is(err, ErrAborted) {
			got, cur = append(got, "aborted:"+string(cur)), nil
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		if end {
			got, cur = append(got, string(cur)), nil
		}
	}
	if want := []string{"abc", "aborted:x", ""}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("messages %q, want %q", got, want)
	}
}

func FuzzLengthPrefixReader(f *testing.F) {
	fuzzFramer(f, LengthPrefix{}, [][]byte{
		nil,
		cat(LengthPrefix{}.Heartbeat(), hdr(1, false), []byte("a"), LengthPrefix{}.Heartbeat(), hdr(0, true)),
		{0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff},
		cat(hdr(3, true), []byte("abc")),
		cat(hdr(1, false), []byte("a"), hdr(0, false), hdr(2, true), []byte("bc")),
		hdr(0, true),
		{0x80, 0},
		{0xff, 0xff, 0xff, 0xff, 1, 2, 3},
		cat(hdr(5, true), []byte("ab")),
	})
}

func FuzzLineReader(f *testing.F) {
	fuzzFramer(f, Line{}, [][]byte{
		nil,
		[]byte("hello\r\n"),
		[]byte("\r\n\r\n"),
		[]byte("a\nb"),
		[]byte("a\rb\r\n"),
		[]byte("unterminated"),
		[]byte("x\r"),
	})
}

func benchmarkWrite(b *testing.B, f Framer, size int) {
	msg := make([]byte, size)
	w := f.NewWriter(io.Discard)
	b.SetBytes(int64(size))
	for b.Loop() {
		w.WriteMessage(msg, true)
		w.Flush()
	}
}

func benchmarkRead(b *testing.B, f Framer, size int) {
	msg := bytes.Repeat([]byte("a"), size)
	var stream bytes.Buffer
	w := f.NewWriter(&stream)
	for range 64 {
		w.WriteMessage(msg, true)
	}
	w.Flush()
	data := stream.Bytes()
	buf := make([]byte, 64<<10)
	rd := bytes.NewReader(data)
	r := f.NewReader(rd, 0)
	b.SetBytes(int64(size))
	for b.Loop() {
		for {
			_, end, err := r.ReadMessage(buf)
			if err == io.EOF {
				rd.Reset(data)
				r = f.NewReader(rd, 0)
				continue
			}
			if err != nil {
				b.Fatal(err)
			}
			if end {
				break
			}
		}
	}
}

func BenchmarkLengthPrefixWrite64B(b *testing.B)   { benchmarkWrite(b, LengthPrefix{}, 64) }
func BenchmarkLengthPrefixWrite64KiB(b *testing.B) { benchmarkWrite(b, LengthPrefix{}, 64<<10) }
func BenchmarkLengthPrefixRead64B(b *testing.B)    { benchmarkRead(b, LengthPrefix{}, 64) }
func BenchmarkLengthPrefixRead64KiB(b *testing.B)  { benchmarkRead(b, LengthPrefix{}, 64<<10) }
func BenchmarkLineRead64B(b *testing.B)            { benchmarkRead(b, Line{}, 64) }
func BenchmarkLineRead4KiB(b *testing.B)           { benchmarkRead(b, Line{}, 4<<10) }

func TestLengthPrefixAbort(t *testing.T) {
	var stream bytes.Buffer
	w := LengthPrefix{}.NewWriter(&stream)
	a := w.(MessageAborter)
	if err := a.AbortMessage(); err != nil { // nothing in progress
		t.Fatal(err)
	}
	w.WriteMessage([]byte("doomed"), false)
	if err := a.AbortMessage(); err != nil {
		t.Fatal(err)
	}
	w.WriteMessage([]byte("next"), true)
	w.Flush()
	r := LengthPrefix{}.NewReader(&stream, 0)
	buf := make([]byte, 64)
	n, end, err := r.ReadMessage(buf)
	if n != 6 || end || err != nil {
		t.Fatalf("first part: %d %v %v", n, end, err)
	}
	if _, _, err := r.ReadMessage(buf); !errors.Is(err, post.ErrReset) {
		t.Fatalf("aborted message: err = %v, want ErrReset", err)
	}
	n, end, err = r.ReadMessage(buf)
	if string(buf[:n]) != "next" || !end || err != nil {
		t.Fatalf("next message: %q %v %v", buf[:n], end, err)
	}
}

// TestLengthPrefixNoEmptyEnd checks that a message ended by an empty write
// after its data arrives with end on the data, not on an extra empty part.
func TestLengthPrefixNoEmptyEnd(t *testing.T) {
	for _, size := range []int{5, 40 << 10, 200 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var stream bytes.Buffer
			w := LengthPrefix{}.NewWriter(&stream)
			w.WriteMessage(make([]byte, size), false)
			w.WriteMessage(nil, true)
			w.Flush()
			r := LengthPrefix{}.NewReader(&stream, 0)
			buf := make([]byte, 1<<20)
			got := 0
			for {
				n, end, err := r.ReadMessage(buf)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 && end {
					t.Fatalf("empty last part after %d bytes", got)
				}
				got += n
				if end {
					break
				}
			}
			if got != size {
				t.Fatalf("got %d bytes, want %d", got, size)
			}
		})
	}
}

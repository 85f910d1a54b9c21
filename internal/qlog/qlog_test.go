package qlog

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	start := time.Now()
	w := NewWriter(nopCloser{&buf}, "fsp", "client", "0a0b0c0d", "urn:test", start)
	w.Event(start.Add(1500*time.Microsecond), "fsp:packet_sent", map[string]int{"packet_number": 7})
	w.Event(start.Add(3*time.Millisecond), "fsp:packet_lost", struct {
		PN uint64 `json:"packet_number"`
	}{7})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Event(start, "after", nil) // ignored after Close
	if n := bytes.Count(buf.Bytes(), []byte{RecordSeparator}); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte{RecordSeparator, '{'}) || !bytes.HasSuffix(buf.Bytes(), []byte("}\n")) {
		t.Fatalf("not JSON-SEQ: %q", buf.String())
	}
	h, evs, err := ReadAll(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if h.Trace.VantagePoint.Type != "client" || h.Trace.CommonFields.GroupID != "0a0b0c0d" || h.Trace.EventSchemas[0] != "urn:test" {
		t.Fatalf("header %+v", h)
	}
	if len(evs) != 2 || evs[0].Name != "fsp:packet_sent" || evs[0].Time != 1.5 || evs[1].Name != "fsp:packet_lost" {
		t.Fatalf("events %+v", evs)
	}
}

func TestCreateNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub")
	for range 2 {
		w, err := Create(dir, "tcp", "server", "1", "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		w.Event(time.Now(), "tcp:x", nil)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 || ents[0].Name() != "tcp_server_1-2.sqlog" || ents[1].Name() != "tcp_server_1.sqlog" {
		t.Fatalf("files %v", ents)
	}
}

func TestDirFromEnvironment(t *testing.T) {
	t.Setenv(EnvDir, "/tmp/x")
	if Dir("") != "/tmp/x" || Dir("/y") != "/y" {
		t.Fatal("Dir ignores its argument or the environment")
	}
}

func TestMalformed(t *testing.T) {
	for _, in := range []string{
		"",
		"\x1e{\"file_schema\":\"other\"}\n",
		"\x1e{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\"}\n\x1e{\"time\":1}\n",
		"\x1e{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\"}\n\x1e{\"time\":\n",
		"\x1e" + strings.Repeat(" ", MaxRecord+1),
	} {
		_, _, err := ReadAll(strings.NewReader(in))
		if !errors.Is(err, post.ErrMalformed) {
			t.Errorf("%.40q: err %v, want ErrMalformed", in, err)
		}
	}
}

// FuzzRead checks that the reader returns events or an error, never
// panics, and that what it reads encodes back to a trace it reads alike.
func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(nopCloser{&buf}, "fsp", "server", "1", "", time.Now())
	w.Event(time.Now(), "fsp:metrics_updated", map[string]float64{"congestion_window": 1e5})
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("\x1e{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\"}\x1e\x1e{\"time\":1,\"name\":\"a\",\"data\":{}}"))
	f.Add([]byte("\x1e{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, evs, err := ReadAll(bytes.NewReader(b))
		if err != nil && !errors.Is(err, post.ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		var out bytes.Buffer
		w := NewWriter(nopCloser{&out}, "fsp", "client", "", "", time.Unix(0, 0))
		for _, e := range evs {
			w.Event(time.Unix(0, 0), e.Name, e.Data)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_, again, err := ReadAll(&out)
		if err != nil || len(again) != len(evs) {
			t.Fatalf("re-encoded trace: %d events, err %v; want %d", len(again), err, len(evs))
		}
	})
}

func TestTruncatedLastRecord(t *testing.T) {
	in := "\x1e{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\"}\n\x1e{\"time\":1,\"name\":\"a\",\"data\":{}}\n\x1e{\"time\":2,\"na"
	r := NewReader(strings.NewReader(in))
	var n int
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 || !r.Truncated {
		t.Fatalf("%d events, truncated %v; want 1, true", n, r.Truncated)
	}
	// Cut short anywhere but the last record, it is malformed.
	if _, _, err := ReadAll(strings.NewReader(in[:len(in)-20] + "\x1e{}\n")); !errors.Is(err, post.ErrMalformed) {
		t.Fatalf("err %v", err)
	}
}

// TestFlushInterval checks that events of a live trace reach the file
// about every FlushInterval.
func TestFlushInterval(t *testing.T) {
	var buf bytes.Buffer
	start := time.Now()
	w := NewWriter(nopCloser{&buf}, "fsp", "client", "1", "", start)
	w.Event(start.Add(time.Millisecond), "a", nil)
	if buf.Len() != 0 {
		t.Fatal("written out at once")
	}
	w.Event(start.Add(FlushInterval), "b", nil)
	_, evs, err := ReadAll(bytes.NewReader(buf.Bytes()))
	if err != nil || len(evs) != 2 {
		t.Fatalf("%d events after %v, %v", len(evs), FlushInterval, err)
	}
}

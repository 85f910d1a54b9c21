// Package qlog writes and reads connection traces in qlog's JSON-SEQ
// serialization (draft-ietf-quic-qlog-main-schema, RFC 7464): a header
// record, then one record per event with "time" (milliseconds since the
// header's reference time), "name" and "data". The FSP and TCP stacks
// write their traces with it; cmd/fsptrace reads them.
package qlog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// EnvDir is the environment variable that switches tracing on for every
// connection when no directory is configured, as QLOGDIR does for quic-go.
const EnvDir = "POSTSOCKETS_QLOGDIR"

// RecordSeparator starts every JSON-SEQ record (RFC 7464).
const RecordSeparator = 0x1e

// Dir returns dir if set, else the value of POSTSOCKETS_QLOGDIR; empty
// means tracing is off.
func Dir(dir string) string {
	if dir != "" {
		return dir
	}
	return os.Getenv(EnvDir)
}

// FileName is the trace file name of one connection: stack, vantage
// point ("client" or "server") and connection ID.
func FileName(stack, role, id string) string {
	return fmt.Sprintf("%s_%s_%s.sqlog", stack, role, id)
}

// Writer writes one trace. Its methods may be called concurrently; after
// Close, Event does nothing.
type Writer struct {
	mu    sync.Mutex
	w     *bufio.Writer
	enc   *json.Encoder
	c     io.Closer
	start time.Time
	err   error
	flush time.Time // when the buffer was last written out
}

// FlushInterval is how long events may wait in a Writer's buffer while
// others follow, so that the trace of a live connection can be read.
const FlushInterval = time.Second

// Header is the first record of a trace.
type Header struct {
	FileSchema          string `json:"file_schema"`
	SerializationFormat string `json:"serialization_format"`
	Title               string `json:"title,omitempty"`
	Trace               Trace  `json:"trace"`
	// qvis still asks for these two.
	QlogFormat  string `json:"qlog_format,omitempty"`
	QlogVersion string `json:"qlog_version,omitempty"`
}

// Trace describes the traced connection.
type Trace struct {
	EventSchemas []string     `json:"event_schemas,omitempty"`
	VantagePoint VantagePoint `json:"vantage_point"`
	CommonFields CommonFields `json:"common_fields"`
}

// VantagePoint says which end wrote the trace.
type VantagePoint struct {
	Name string `json:"name,omitempty"`
	Type string `json:"type"` // "client" or "server"
}

// CommonFields hold what every event shares.
type CommonFields struct {
	GroupID       string        `json:"group_id,omitempty"`
	ReferenceTime ReferenceTime `json:"reference_time"`
}

// ReferenceTime is the clock event times count from.
type ReferenceTime struct {
	ClockType     string `json:"clock_type"`
	Epoch         string `json:"epoch"`
	WallClockTime string `json:"wall_clock_time,omitempty"`
}

// Create makes the trace file FileName(stack, role, id) in dir (created
// if missing) and writes its header. It never overwrites a trace: if the
// name is taken, a counter is appended. Event times count from start.
func Create(dir, stack, role, id, schema string, start time.Time) (*Writer, error) {
	f, err := CreateFile(dir, stack, role, id)
	if err != nil {
		return nil, err
	}
	return NewWriter(f, stack, role, id, schema, start), nil
}

// CreateFile makes the empty file FileName(stack, role, id) in dir,
// creating dir if missing; if the name is taken, a counter is appended.
func CreateFile(dir, stack, role, id string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	name := FileName(stack, role, id)
	for i := 2; ; i++ {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil || !errors.Is(err, fs.ErrExist) || i > 100 {
			return f, err
		}
		name = strings.TrimSuffix(FileName(stack, role, id), ".sqlog") + fmt.Sprintf("-%d.sqlog", i)
	}
}

// NewWriter starts a trace on w, which Close closes. Event times count
// from start.
func NewWriter(w io.WriteCloser, stack, role, id, schema string, start time.Time) *Writer {
	bw := bufio.NewWriterSize(w, 64<<10)
	t := &Writer{w: bw, enc: json.NewEncoder(bw), c: w, start: start, flush: start}
	h := Header{
		FileSchema:          "urn:ietf:params:qlog:file:sequential",
		SerializationFormat: "application/qlog+json-seq",
		Title:               "postsockets " + stack,
		Trace: Trace{
			VantagePoint: VantagePoint{Type: role},
			CommonFields: CommonFields{
				GroupID: id,
				ReferenceTime: ReferenceTime{ClockType: "monotonic", Epoch: "unknown",
					WallClockTime: start.Format(time.RFC3339Nano)},
			},
		},
		QlogFormat:  "JSON-SEQ",
		QlogVersion: "0.3",
	}
	if schema != "" {
		h.Trace.EventSchemas = []string{schema}
	}
	t.record(h)
	return t
}

// record writes v as one JSON-SEQ record. Called with t.mu held or before
// t is shared.
func (t *Writer) record(v any) {
	if t.err != nil {
		return
	}
	if t.err = t.w.WriteByte(RecordSeparator); t.err != nil {
		return
	}
	t.err = t.enc.Encode(v) // Encode ends the record with a line feed
}

type eventRecord struct {
	Time float64 `json:"time"`
	Name string  `json:"name"`
	Data any     `json:"data"`
}

// Event records the event name with data (a value encoding/json takes)
// at time at.
func (t *Writer) Event(at time.Time, name string, data any) {
	if t == nil {
		return
	}
	ms := float64(at.Sub(t.start).Nanoseconds()) / 1e6
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c == nil {
		return
	}
	t.record(eventRecord{Time: ms, Name: name, Data: data})
	if t.err == nil && at.Sub(t.flush) >= FlushInterval {
		t.flush = at
		t.err = t.w.Flush()
	}
}

// Close flushes the trace and closes its file. It returns the first
// write error.
func (t *Writer) Close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c == nil {
		return t.err
	}
	if t.err == nil {
		t.err = t.w.Flush()
	}
	if err := t.c.Close(); t.err == nil {
		t.err = err
	}
	t.c = nil
	return t.err
}

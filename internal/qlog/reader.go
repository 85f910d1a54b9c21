package qlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"

	"github.com/postsockets/postsockets/post"
)

// MaxRecord bounds one record a Reader accepts.
const MaxRecord = 1 << 20

// Event is one event record as read.
type Event struct {
	Time float64         `json:"time"` // milliseconds since the reference time
	Name string          `json:"name"`
	Data json.RawMessage `json:"data"`
}

// Reader reads a JSON-SEQ trace: Header first, then Next until io.EOF.
type Reader struct {
	s      *bufio.Scanner
	n      int // records read
	header *Header
	// Truncated is set when the trace ended inside its last record, as
	// the trace of a connection still open (or of a process that
	// exited) does: that record is dropped, as RFC 7464 allows.
	Truncated bool
}

// NewReader reads a trace from r.
func NewReader(r io.Reader) *Reader {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64<<10), MaxRecord)
	s.Split(splitRecords)
	return &Reader{s: s}
}

// splitRecords yields the text between record separators.
func splitRecords(data []byte, atEOF bool) (int, []byte, error) {
	start := 0
	for start < len(data) && data[start] == RecordSeparator {
		start++
	}
	if i := bytes.IndexByte(data[start:], RecordSeparator); i >= 0 {
		return start + i, data[start : start+i], nil
	}
	if atEOF {
		if start == len(data) {
			return len(data), nil, nil
		}
		return len(data), data[start:], nil
	}
	return start, nil, nil
}

// next returns the next non-empty record, and whether it ends with a
// line feed, as a complete record does.
func (r *Reader) next() ([]byte, bool, error) {
	for r.s.Scan() {
		raw := r.s.Bytes()
		b := bytes.TrimSpace(raw)
		if len(b) == 0 {
			continue
		}
		r.n++
		return b, raw[len(raw)-1] == '\n', nil
	}
	if err := r.s.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, false, post.Errorf(post.ErrMalformed, "qlog: record %d longer than %d bytes", r.n+1, MaxRecord)
		}
		return nil, false, err
	}
	return nil, false, io.EOF
}

// Header reads the header record, which must be the first; later calls
// return it again.
func (r *Reader) Header() (*Header, error) {
	if r.header != nil {
		return r.header, nil
	}
	if r.n > 0 {
		return nil, post.Errorf(post.ErrInvalid, "qlog: Header after Next")
	}
	b, _, err := r.next()
	if err == io.EOF {
		return nil, post.Errorf(post.ErrMalformed, "qlog: empty trace (a connection still open may not have written it out yet)")
	}
	if err != nil {
		return nil, err
	}
	var h Header
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, post.Errorf(post.ErrMalformed, "qlog: header: %v", err)
	}
	if h.FileSchema != "urn:ietf:params:qlog:file:sequential" {
		return nil, post.Errorf(post.ErrMalformed, "qlog: file_schema %q is not the sequential one", h.FileSchema)
	}
	r.header = &h
	return &h, nil
}

// Next returns the next event, or io.EOF after the last. It reads the
// header first if Header was not called.
func (r *Reader) Next() (Event, error) {
	if r.header == nil {
		if _, err := r.Header(); err != nil {
			return Event{}, err
		}
	}
	b, complete, err := r.next()
	if err != nil {
		return Event{}, err
	}
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		if !complete && r.atEnd() {
			r.Truncated = true
			return Event{}, io.EOF
		}
		return Event{}, post.Errorf(post.ErrMalformed, "qlog: record %d: %v", r.n, err)
	}
	if e.Name == "" {
		return Event{}, post.Errorf(post.ErrMalformed, "qlog: record %d has no name", r.n)
	}
	return e, nil
}

// atEnd reports whether no record follows.
func (r *Reader) atEnd() bool {
	for r.s.Scan() {
		if len(bytes.TrimSpace(r.s.Bytes())) > 0 {
			return false
		}
	}
	return r.s.Err() == nil
}

// ReadAll reads a whole trace; a truncated last record is dropped.
func ReadAll(r io.Reader) (*Header, []Event, error) {
	rd := NewReader(r)
	h, err := rd.Header()
	if err != nil {
		return nil, nil, err
	}
	var evs []Event
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return h, evs, nil
		}
		if err != nil {
			return h, evs, err
		}
		evs = append(evs, e)
	}
}

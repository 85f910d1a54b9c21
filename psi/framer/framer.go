// Package framer delimits messages on byte-stream stacks. A Framer turns a
// stream into a sequence of messages, each written and read in parts.
package framer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/postsockets/postsockets/post"
)

// MessageReader reads messages from a stream in parts.
type MessageReader interface {
	// ReadMessage reads from the current message into p; end is true when
	// the returned bytes complete it. A malformed stream gives an error
	// wrapping post.ErrMalformed, an over-long message one wrapping
	// post.ErrMessageTooLarge.
	ReadMessage(p []byte) (n int, end bool, err error)
}

// MessageWriter writes messages to a stream in parts. Parts may be
// buffered until Flush.
type MessageWriter interface {
	WriteMessage(p []byte, end bool) error
	Flush() error
}

// Framer makes readers and writers for one framing.
type Framer interface {
	Name() string
	NewReader(r io.Reader, maxMessage int64) MessageReader
	NewWriter(w io.Writer) MessageWriter
}

// LengthPrefix frames each part with a 4-byte big-endian header: the top bit
// marks the last part of a message and the low 31 bits give the part's
// length. It carries any content.
type LengthPrefix struct{}

// Name returns "length-prefix".
func (LengthPrefix) Name() string { return "length-prefix" }

const (
	endBit   = 1 << 31
	maxChunk = endBit - 1
	hdrLen   = 4
)

// NewReader returns a reader of length-prefixed messages.
func (LengthPrefix) NewReader(r io.Reader, maxMessage int64) MessageReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &lpReader{r: br, max: maxMessage}
}

type lpReader struct {
	r      *bufio.Reader
	max    int64
	remain int   // bytes left in the current part
	last   bool  // current part is the last of its message
	inMsg  int64 // bytes of the current message so far
	hdr    [hdrLen]byte
	err    error
}

func (l *lpReader) ReadMessage(p []byte) (int, bool, error) {
	if l.err != nil {
		return 0, false, l.err
	}
	for l.remain == 0 {
		if _, err := io.ReadFull(l.r, l.hdr[:]); err != nil {
			if err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("%w: truncated frame header", post.ErrMalformed)
			}
			l.err = err
			return 0, false, err
		}
		h := binary.BigEndian.Uint32(l.hdr[:])
		l.remain = int(h & maxChunk)
		l.last = h&endBit != 0
		if l.max > 0 && l.inMsg+int64(l.remain) > l.max {
			l.err = fmt.Errorf("%w: inbound message over %d bytes", post.ErrMessageTooLarge, l.max)
			return 0, false, l.err
		}
		if l.remain == 0 {
			if l.last {
				l.inMsg = 0
				return 0, true, nil
			}
			// Empty non-final part: skip it.
		}
	}
	if len(p) > l.remain {
		p = p[:l.remain]
	}
	n, err := l.r.Read(p)
	l.remain -= n
	l.inMsg += int64(n)
	if err != nil {
		if err == io.EOF {
			err = fmt.Errorf("%w: stream ended inside a message", post.ErrMalformed)
		}
		l.err = err
		return n, false, err
	}
	end := l.remain == 0 && l.last
	if end {
		l.inMsg = 0
	}
	return n, end, nil
}

// NewWriter returns a writer of length-prefixed messages.
func (LengthPrefix) NewWriter(w io.Writer) MessageWriter {
	return &lpWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

type lpWriter struct {
	w   *bufio.Writer
	hdr [hdrLen]byte
}

func (l *lpWriter) WriteMessage(p []byte, end bool) error {
	for {
		n := len(p)
		last := end
		if n > maxChunk {
			n, last = maxChunk, false
		}
		h := uint32(n)
		if last {
			h |= endBit
		}
		binary.BigEndian.PutUint32(l.hdr[:], h)
		if _, err := l.w.Write(l.hdr[:]); err != nil {
			return err
		}
		if _, err := l.w.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}

func (l *lpWriter) Flush() error { return l.w.Flush() }

// Line frames each message as one line ending in CRLF, as text protocols
// such as SMTP and HTTP/1 headers do. Content must not contain CR or LF.
type Line struct{}

// Name returns "line".
func (Line) Name() string { return "line" }

// ErrLineContent is returned when a message for the Line framer holds CR or LF.
var ErrLineContent = errors.New("framer: line message contains CR or LF")

// NewReader returns a reader of CRLF-terminated lines.
func (Line) NewReader(r io.Reader, maxMessage int64) MessageReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 16<<10)
	}
	return &lineReader{r: br, max: maxMessage}
}

type lineReader struct {
	r     *bufio.Reader
	max   int64
	inMsg int64
	cr    bool // previous part ended with a CR held back
	err   error
}

func (l *lineReader) ReadMessage(p []byte) (int, bool, error) {
	if l.err != nil {
		return 0, false, l.err
	}
	if len(p) == 0 {
		return 0, false, nil
	}
	n := 0
	for n < len(p) {
		c, err := l.r.ReadByte()
		if err != nil {
			if err == io.EOF && (l.inMsg > 0 || n > 0 || l.cr) {
				err = fmt.Errorf("%w: stream ended inside a line", post.ErrMalformed)
			}
			l.err = err
			return n, false, err
		}
		if l.cr {
			l.cr = false
			if c == '\n' {
				l.inMsg = 0
				return n, true, nil
			}
			l.err = fmt.Errorf("%w: CR not followed by LF", post.ErrMalformed)
			return n, false, l.err
		}
		switch c {
		case '\r':
			l.cr = true
			continue
		case '\n':
			l.err = fmt.Errorf("%w: bare LF in line", post.ErrMalformed)
			return n, false, l.err
		}
		if l.max > 0 && l.inMsg+1 > l.max {
			l.err = fmt.Errorf("%w: line over %d bytes", post.ErrMessageTooLarge, l.max)
			return n, false, l.err
		}
		p[n] = c
		n++
		l.inMsg++
		// Return early once the buffer has nothing more ready, so parts
		// flow without waiting for the rest of the line.
		if l.r.Buffered() == 0 {
			return n, false, nil
		}
	}
	return n, false, nil
}

// NewWriter returns a writer of CRLF-terminated lines.
func (Line) NewWriter(w io.Writer) MessageWriter {
	return &lineWriter{w: bufio.NewWriterSize(w, 16<<10)}
}

type lineWriter struct{ w *bufio.Writer }

func (l *lineWriter) WriteMessage(p []byte, end bool) error {
	if bytes.ContainsAny(p, "\r\n") {
		return ErrLineContent
	}
	if _, err := l.w.Write(p); err != nil {
		return err
	}
	if end {
		_, err := l.w.WriteString("\r\n")
		return err
	}
	return nil
}

func (l *lineWriter) Flush() error { return l.w.Flush() }

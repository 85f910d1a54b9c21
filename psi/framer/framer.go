// Package framer delimits messages on byte-stream stacks. A Framer turns a
// stream into a sequence of messages, each written and read in parts.
package framer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/postsockets/postsockets/post"
)

// MessageReader reads messages from a stream in parts.
type MessageReader interface {
	// ReadMessage reads from the current message into p; end is true when
	// the returned bytes complete it. A malformed stream gives an error
	// wrapping post.ErrMalformed; a message the writer aborted one
	// wrapping post.ErrReset, after which the next message follows.
	ReadMessage(p []byte) (n int, end bool, err error)
}

// MessageWriter writes messages to a stream in parts. Parts may be
// buffered until Flush.
type MessageWriter interface {
	WriteMessage(p []byte, end bool) error
	Flush() error
}

// MessageAborter is implemented by writers whose framing can abandon the
// message in progress, so that the reader gets an error for it.
type MessageAborter interface {
	// AbortMessage ends the message in progress as aborted and flushes.
	// With no message in progress it does nothing.
	AbortMessage() error
}

// Framer makes readers and writers for one framing. Messages of any
// length stream through in parts: maxMessage is for framings that must
// hold a message whole, and LengthPrefix and Line, which do not, ignore
// it.
type Framer interface {
	Name() string
	NewReader(r io.Reader, maxMessage int64) MessageReader
	NewWriter(w io.Writer) MessageWriter
}

// Heartbeater is implemented by framings with a frame that carries
// nothing and that their readers skip wherever it falls, between
// messages or inside one. psi/tcp sends it to a peer that said it takes
// it, so that the peer hears from it end to end while the application
// sends nothing.
type Heartbeater interface {
	// Heartbeat returns the frame.
	Heartbeat() []byte
}

// LengthPrefix frames each part with a 4-byte big-endian header: the top bit
// marks the last part of a message and the low 31 bits give the part's
// length. It carries any content. The header 0xFFFFFFFF, which no part
// uses, aborts the message in progress; 0x7FFFFFFF, which no part uses
// either, is the heartbeat (Heartbeater), which readers skip. Readers
// before 2 December took it for the header of a part of 2 GiB: it is
// sent only to peers that said they take it.
type LengthPrefix struct{}

// Heartbeat returns the header 0x7FFFFFFF.
func (LengthPrefix) Heartbeat() []byte { return []byte{0x7f, 0xff, 0xff, 0xff} }

// Name returns "length-prefix".
func (LengthPrefix) Name() string { return "length-prefix" }

const (
	endBit   = 1 << 31
	lenMask  = endBit - 1
	maxChunk = endBit - 2 // lenMask|endBit is the abort marker, lenMask the heartbeat
	abortHdr = endBit | lenMask
	beatHdr  = lenMask
	hdrLen   = 4
)

// NewReader returns a reader of length-prefixed messages. A *bufio.Reader
// is used as is; anything else is wrapped in a 32 KiB one, which large
// reads bypass.
//
// Errors from r other than io.EOF are returned without breaking the framing,
// so a read that timed out (a deadline on a net.Conn) may be retried.
func (LengthPrefix) NewReader(r io.Reader, maxMessage int64) MessageReader {
	br, ok := r.(*bufio.Reader)
	if ok {
		return &lpReader{r: br}
	}
	return &lpReader{r: bufio.NewReaderSize(r, 32<<10), src: r}
}

// directRead is the smallest read that bypasses the buffer when it is empty,
// saving a copy of bulk content.
const directRead = 4 << 10

type lpReader struct {
	r      *bufio.Reader
	src    io.Reader // under r, if NewReader made r
	remain int       // bytes left in the current part
	last   bool      // current part is the last of its message
	open   bool      // a message has begun and not yet ended
	hdr    [hdrLen]byte
	hdrN   int   // bytes of hdr read so far
	err    error // sticky: the stream is unusable
}

func (l *lpReader) ReadMessage(p []byte) (int, bool, error) {
	if l.err != nil {
		return 0, false, l.err
	}
	for l.remain == 0 {
		for l.hdrN < hdrLen {
			n, err := l.r.Read(l.hdr[l.hdrN:])
			l.hdrN += n
			if l.hdrN == hdrLen {
				break
			}
			if err != nil {
				return 0, false, l.fail(err, l.open || l.hdrN > 0)
			}
		}
		l.hdrN = 0
		h := binary.BigEndian.Uint32(l.hdr[:])
		if h == beatHdr {
			continue // a heartbeat: nothing for the message
		}
		if h == abortHdr {
			if !l.open {
				l.err = fmt.Errorf("%w: abort marker outside a message", post.ErrMalformed)
				return 0, false, l.err
			}
			l.open = false
			return 0, false, ErrAborted
		}
		l.remain = int(h & lenMask)
		l.last = h&endBit != 0
		l.open = true
		if l.remain == 0 && l.last {
			l.open = false
			return 0, true, nil
		}
		// An empty non-final part carries nothing: read the next header.
	}
	if len(p) == 0 {
		return 0, false, nil
	}
	if len(p) > l.remain {
		p = p[:l.remain]
	}
	var n int
	var err error
	if !l.last && len(p) == l.remain && len(p) > 1 && l.r.Buffered() < len(p) {
		// Leave the part's last byte to the buffer, which then also
		// takes in an empty last part sent right after it.
		p = p[:len(p)-1]
	}
	if l.src != nil && len(p) >= directRead && l.r.Buffered() == 0 {
		n, err = l.src.Read(p)
	} else {
		n, err = l.r.Read(p)
	}
	l.remain -= n
	end := l.remain == 0 && l.last
	if l.remain == 0 && !l.last {
		end = l.takeEmptyEnd()
	}
	if end {
		l.open = false
	}
	if err != nil && !end {
		if n > 0 && err != io.EOF {
			// Deliver the bytes now; the error comes back on the next call.
			return n, false, nil
		}
		return n, false, l.fail(err, true)
	}
	return n, end, nil
}

// ErrAborted is returned by a length-prefix reader for a message its
// writer aborted; the next message follows.
var ErrAborted = post.Errorf(post.ErrReset, "message aborted by the sender")

// takeEmptyEnd consumes an empty last part already buffered behind a part
// that has just been read, so that the data carries the end of the
// message instead of an empty part after it.
func (l *lpReader) takeEmptyEnd() bool {
	if l.r.Buffered() < hdrLen {
		return false
	}
	b, _ := l.r.Peek(hdrLen)
	if binary.BigEndian.Uint32(b) != endBit {
		return false
	}
	l.r.Discard(hdrLen)
	l.last = true
	return true
}

// fail records err if it ends the stream and returns it; mid tells whether
// the stream stopped inside a message.
func (l *lpReader) fail(err error, mid bool) error {
	if err != io.EOF {
		return err // possibly transient, such as a deadline
	}
	if mid {
		err = fmt.Errorf("%w: stream ended inside a message", post.ErrMalformed)
	}
	l.err = err
	return err
}

// recordSize is the largest TLS record payload. Writes of whole multiples of
// it leave no short records behind on a TLS connection.
const recordSize = 16 << 10

// NewWriter returns a writer of length-prefixed messages. Small parts are
// gathered in a 64 KiB buffer; a large part is written straight from the
// caller's slice after topping the buffer up to a multiple of recordSize, so
// it is neither copied whole nor preceded by a tiny write for its header.
func (LengthPrefix) NewWriter(w io.Writer) MessageWriter {
	return &lpWriter{w: w, last: -1}
}

// writeBufSize is the lpWriter's buffer, allocated on first use.
const writeBufSize = 64 << 10

type lpWriter struct {
	w    io.Writer
	buf  []byte
	last int   // offset in buf of the last part's header, if its data is there too; else -1
	open bool  // a message has begun and not yet ended
	err  error // sticky: a failed write leaves the stream in an unknown state
}

func (l *lpWriter) WriteMessage(p []byte, end bool) error {
	if l.err != nil {
		return l.err
	}
	l.open = !end
	if len(p) == 0 && end && l.last >= 0 && l.last+hdrLen <= len(l.buf) {
		// End the message on its last part, still buffered, rather than
		// with an empty part after it.
		h := binary.BigEndian.Uint32(l.buf[l.last:])
		if h&endBit == 0 {
			binary.BigEndian.PutUint32(l.buf[l.last:], h|endBit)
			l.last = -1
			return nil
		}
	}
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
		if err := l.writePart(h, p[:n]); err != nil {
			l.err = err
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}

func (l *lpWriter) writePart(h uint32, p []byte) error {
	if l.buf == nil {
		l.buf = make([]byte, 0, writeBufSize)
	}
	if cap(l.buf)-len(l.buf) < hdrLen+len(p) && len(p) < cap(l.buf)/2 {
		// Small part that does not fit: make room.
		if err := l.Flush(); err != nil {
			return err
		}
	}
	if cap(l.buf)-len(l.buf) < hdrLen {
		if err := l.Flush(); err != nil {
			return err
		}
	}
	l.last = -1
	off := len(l.buf)
	l.buf = binary.BigEndian.AppendUint32(l.buf, h)
	if len(p) <= cap(l.buf)-len(l.buf) {
		l.buf = append(l.buf, p...)
		l.last = off
		return nil
	}
	// Large part: top the buffer up to a record boundary, write it, then
	// write the rest of p directly.
	k := min((recordSize-len(l.buf)%recordSize)%recordSize, len(p))
	l.buf = append(l.buf, p[:k]...)
	if err := l.Flush(); err != nil {
		return err
	}
	if _, err := l.w.Write(p[k:]); err != nil {
		return err
	}
	return nil
}

func (l *lpWriter) Flush() error {
	if l.err != nil {
		return l.err
	}
	l.last = -1
	if len(l.buf) == 0 {
		return nil
	}
	_, err := l.w.Write(l.buf)
	if err != nil {
		l.err = err
		return err
	}
	l.buf = l.buf[:0]
	return nil
}

// AbortMessage writes the abort marker if a message is in progress, and
// flushes.
func (l *lpWriter) AbortMessage() error {
	if l.err != nil {
		return l.err
	}
	if l.open {
		if l.buf == nil {
			l.buf = make([]byte, 0, writeBufSize)
		}
		l.buf = binary.BigEndian.AppendUint32(l.buf, abortHdr)
		l.open = false
	}
	return l.Flush()
}

// Line frames each message as one line ending in CRLF, as text protocols
// such as SMTP and HTTP/1 headers do. Content must not contain CR or LF.
type Line struct{}

// Name returns "line".
func (Line) Name() string { return "line" }

// ErrLineContent is returned when a message for the Line framer holds CR
// or LF. It wraps post.ErrInvalid: the content cannot be framed.
var ErrLineContent = post.Errorf(post.ErrInvalid, "framer: line message contains CR or LF")

// NewReader returns a reader of CRLF-terminated lines. Like the
// length-prefix reader, it survives errors from r other than io.EOF.
func (Line) NewReader(r io.Reader, maxMessage int64) MessageReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 16<<10)
	}
	return &lineReader{r: br}
}

type lineReader struct {
	r     *bufio.Reader
	inMsg int64
	cr    bool  // a CR was consumed; an LF must follow
	err   error // sticky
}

func (l *lineReader) ReadMessage(p []byte) (int, bool, error) {
	if l.err != nil {
		return 0, false, l.err
	}
	if l.cr {
		end, err := l.endLine()
		return 0, end, err
	}
	if len(p) == 0 {
		return 0, false, nil
	}
	if l.r.Buffered() == 0 {
		if _, err := l.r.Peek(1); err != nil {
			return 0, false, l.fail(err)
		}
	}
	// Scan what is buffered, up to one byte past p, for the terminator.
	b, _ := l.r.Peek(min(l.r.Buffered(), len(p)+1))
	i := bytes.IndexAny(b, "\r\n")
	found := i >= 0
	if !found {
		i = min(len(b), len(p))
	}
	n := copy(p, b[:i])
	l.r.Discard(n)
	l.inMsg += int64(n)
	if !found {
		return n, false, nil
	}
	if b[n] == '\n' {
		l.err = fmt.Errorf("%w: bare LF in line", post.ErrMalformed)
		return n, false, l.err
	}
	l.r.Discard(1) // the CR
	l.cr = true
	if l.r.Buffered() == 0 {
		return n, false, nil // resolve the CR on the next call
	}
	end, err := l.endLine()
	return n, end, err
}

// endLine consumes the LF after a CR and reports whether the line ended.
func (l *lineReader) endLine() (bool, error) {
	c, err := l.r.ReadByte()
	if err != nil {
		return false, l.fail(err)
	}
	l.cr = false
	if c != '\n' {
		l.err = fmt.Errorf("%w: CR not followed by LF", post.ErrMalformed)
		return false, l.err
	}
	l.inMsg = 0
	return true, nil
}

func (l *lineReader) fail(err error) error {
	if err != io.EOF {
		return err // possibly transient, such as a deadline
	}
	if l.inMsg > 0 || l.cr {
		err = fmt.Errorf("%w: stream ended inside a line", post.ErrMalformed)
	}
	l.err = err
	return err
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

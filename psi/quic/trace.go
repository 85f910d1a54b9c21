package quic

import (
	"bufio"
	"context"
	"os"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
	quicqlog "github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/postsockets/postsockets/internal/qlog"
	"github.com/postsockets/postsockets/psi"
)

// TraceSchema is the event schema of quic-go's qlog traces.
const TraceSchema = quicqlog.EventSchema

// tracer hands quic-go's own qlog through: with Config.TraceDir (or
// POSTSOCKETS_QLOGDIR) set, each connection writes
// quic_<client|server>_<connection ID>.sqlog there. With Config.Events
// set, the connection's events also feed its hooks (connHooks). It
// returns nil when neither is on.
func tracer(cfg *psi.Config) func(context.Context, bool, quicgo.ConnectionID) qlogwriter.Trace {
	var dir string
	events := false
	if cfg != nil {
		dir, events = cfg.TraceDir, cfg.Events
	}
	if dir = qlog.Dir(dir); dir == "" && !events {
		return nil
	}
	log := cfg.Log()
	return func(ctx context.Context, isClient bool, id quicgo.ConnectionID) qlogwriter.Trace {
		ch := hooksOf(ctx)
		var seq *qlogwriter.FileSeq
		if dir != "" {
			role := "server"
			if isClient {
				role = "client"
			}
			f, err := qlog.CreateFile(dir, Name, role, id.String())
			if err != nil {
				log.Warn("quic: no trace", "err", err)
			} else {
				bf := &bufferedFile{w: bufio.NewWriterSize(f, 64<<10), f: f}
				seq = qlogwriter.NewConnectionFileSeq(bf, isClient, id)
				go seq.Run()
				if ch != nil {
					ch.file = bf
				}
			}
		}
		switch {
		case ch != nil && events:
			t := &tapTrace{tap: ch.observe}
			if seq != nil {
				t.next = seq
			}
			return t
		case seq != nil:
			return seq
		}
		return nil
	}
}

// bufferedFile is a trace file that can be flushed while quic-go writes
// to it, and flushes its buffer when closed.
type bufferedFile struct {
	mu     sync.Mutex
	w      *bufio.Writer
	f      *os.File
	closed bool
}

func (b *bufferedFile) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, os.ErrClosed
	}
	return b.w.Write(p)
}

// Flush writes out what is buffered.
func (b *bufferedFile) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	return b.w.Flush()
}

func (b *bufferedFile) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.w.Flush()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// traceWait bounds how long Close waits for a traced connection to end,
// so that its trace is complete.
const traceWait = time.Second

// finishTrace is called when a transient's Close is done. If the
// connection is traced, what quic-go recorded is written out, so that a
// program that exits right after Close keeps it; if every transient is
// closed, Close first waits (at most traceWait) for the connection to
// end, when quic-go completes the trace and closes its file.
func (c *conn) finishTrace() {
	ch := c.hooks
	if ch == nil || ch.file == nil {
		return
	}
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended {
		tm := time.NewTimer(traceWait)
		select {
		case <-c.qc.Context().Done():
		case <-tm.C:
		}
		tm.Stop()
	}
	_ = ch.file.Flush()
}

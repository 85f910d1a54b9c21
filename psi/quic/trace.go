package quic

import (
	"bufio"
	"context"
	"os"

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
// quic_<client|server>_<connection ID>.sqlog there. It returns nil when
// tracing is off.
func tracer(cfg *psi.Config) func(context.Context, bool, quicgo.ConnectionID) qlogwriter.Trace {
	var dir string
	if cfg != nil {
		dir = cfg.TraceDir
	}
	if dir = qlog.Dir(dir); dir == "" {
		return nil
	}
	log := cfg.Log()
	return func(_ context.Context, isClient bool, id quicgo.ConnectionID) qlogwriter.Trace {
		role := "server"
		if isClient {
			role = "client"
		}
		f, err := qlog.CreateFile(dir, Name, role, id.String())
		if err != nil {
			log.Warn("quic: no trace", "err", err)
			return nil
		}
		seq := qlogwriter.NewConnectionFileSeq(&bufferedFile{bufio.NewWriterSize(f, 64<<10), f}, isClient, id)
		go seq.Run()
		return seq
	}
}

// bufferedFile flushes its buffer when closed.
type bufferedFile struct {
	*bufio.Writer
	f *os.File
}

func (b *bufferedFile) Close() error {
	err := b.Flush()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	return err
}

package tcp

import (
	"fmt"
	"net"
	"time"

	"github.com/postsockets/postsockets/internal/qlog"
	"github.com/postsockets/postsockets/psi"
)

// TraceSchema names the TCP trace events (docs/tracing.md).
const TraceSchema = "urn:postsockets:qlog:events:tcp-1"

// TraceInterval is how often a traced connection samples the kernel's
// TCP_INFO.
const TraceInterval = 50 * time.Millisecond

// startTrace writes, with Config.TraceDir (or POSTSOCKETS_QLOGDIR) set, a
// trace of samples of the kernel's TCP_INFO (Linux): RTT, congestion
// window, retransmissions and bytes, when they change, until the socket
// is closed. The
// kernel keeps TCP's packets to itself, so there are no packet events.
func startTrace(cfg *psi.Config, t *transient, server bool) {
	dir := qlog.Dir(cfg.TraceDir)
	if dir == "" || t.tcp == nil {
		return
	}
	role := "server"
	if !server {
		role = "client"
	}
	id := fmt.Sprintf("%d-%d", t.local.Port(), t.remote.Port())
	w, err := qlog.Create(dir, name, role, id, TraceSchema, time.Now())
	if err != nil {
		t.log.Warn("tcp: no trace", "err", err)
		return
	}
	w.Event(time.Now(), "tcp:connection_started", struct {
		Local  string `json:"local"`
		Remote string `json:"remote"`
	}{t.local.String(), t.remote.String()})
	t.traced = make(chan struct{})
	go func() {
		traceLoop(w, t.tcp, t.done, t.linger+time.Second, t.closedErr)
		close(t.traced)
	}()
}

// waitTrace waits, after the socket is closed, until the trace is written
// out, so that a program that exits after Close keeps it; at most a
// second.
func (t *transient) waitTrace() {
	if t.traced == nil {
		return
	}
	tm := time.NewTimer(time.Second)
	defer tm.Stop()
	select {
	case <-t.traced:
	case <-tm.C:
	}
}

// traceLoop samples c until the socket is closed, or for at most linger
// after done is closed (Close flushes and waits for acknowledgements
// then).
func traceLoop(w *qlog.Writer, c *net.TCPConn, done <-chan struct{}, linger time.Duration, why func(string) error) {
	tick := time.NewTicker(TraceInterval)
	defer tick.Stop()
	var (
		last tcpSample
		end  <-chan time.Time
	)
	for {
		s, ok := sampleTCP(c)
		if !ok {
			break
		}
		if s != last {
			w.Event(time.Now(), "tcp:metrics_updated", s)
			last = s
		}
		select {
		case <-tick.C:
			continue
		case <-done:
			done = nil
			end = time.After(linger)
			continue
		case <-end:
		}
		break
	}
	if done != nil {
		<-done // no samples (outside Linux): the end is still to come
	}
	w.Event(time.Now(), "tcp:connection_closed", struct {
		Error string `json:"error"`
	}{why("close").Error()})
	w.Close()
}

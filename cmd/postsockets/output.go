package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/postsockets/postsockets/carrier"
)

// output prints human lines on stderr and results on stdout, or one
// JSON object per line on stdout with -json.
type output struct {
	json bool
	mu   sync.Mutex
	out  io.Writer
	err  io.Writer
}

func newOutput(js bool) *output { return &output{json: js, out: os.Stdout, err: os.Stderr} }

// note is a human remark on stderr; -json keeps it there too.
func (o *output) note(format string, a ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.err, format+"\n", a...)
}

// event prints v as a JSON line with -json; nothing otherwise.
func (o *output) event(v map[string]any) {
	if !o.json {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	json.NewEncoder(o.out).Encode(v)
}

// result prints a result: text on stdout, or JSON.
func (o *output) result(text string, v map[string]any) {
	if o.json {
		o.event(v)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintln(o.out, text)
}

// connected reports the stack that won, the path and the RTT.
func (o *output) connected(role string, c *carrier.Carrier) {
	st := c.Stats()
	text := fmt.Sprintf("%s over %s: %s rtt %s", role, st.Stack, st.Path, fmtDur(st.Path.RTT))
	if st.Race.Attempts > 0 {
		text += fmt.Sprintf(" (won a race of %d %s)", st.Race.Attempts, plural(st.Race.Attempts, "attempt"))
	}
	if id := c.Peer(); id.Chain != nil {
		text += fmt.Sprintf(" peer pin %s", id.Pin)
	}
	if o.json {
		o.event(map[string]any{"event": role, "stack": st.Stack, "local": st.Path.Local.String(),
			"remote": st.Path.Remote.String(), "rtt_ms": ms(st.Path.RTT), "race_attempts": st.Race.Attempts})
		return
	}
	o.note("%s", text)
}

// connEvent prints a connection event (-events).
func (o *output) connEvent(e carrier.Event) {
	if o.json {
		v := map[string]any{"event": "connection_event", "kind": e.Kind.String(), "stack": e.Stack}
		if e.Old.Remote.IsValid() {
			v["old"] = e.Old.String()
		}
		if e.New.Remote.IsValid() {
			v["new"] = e.New.String()
		}
		if e.Err != nil {
			v["error"] = e.Err.Error()
		}
		o.event(v)
		return
	}
	text := fmt.Sprintf("event %s over %s", e.Kind, e.Stack)
	if e.Kind == carrier.PathChange || e.Kind == carrier.PathValidated {
		text += fmt.Sprintf(": %s -> %s", e.Old, e.New)
	}
	if e.Err != nil {
		text += ": " + e.Err.Error()
	}
	o.note("%s", text)
}

// stats reports a Carrier's counters at the end of a run.
func (o *output) stats(c *carrier.Carrier, elapsed time.Duration) map[string]any {
	st := c.Stats()
	retx, _ := retransmissions(st)
	return map[string]any{
		"stack": st.Stack, "remote": st.Path.Remote.String(), "rtt_ms": ms(st.SmoothedRTT),
		"messages_sent": st.MessagesSent, "messages_received": st.MessagesReceived,
		"bytes_sent": st.BytesSent, "bytes_received": st.BytesReceived,
		"packets_sent": st.PacketsSent, "packets_lost": st.PacketsLost,
		"retransmissions": retx, "forks": st.Forks, "seconds": elapsed.Seconds(),
	}
}

// retransmissions is a Carrier's retransmission count for JSON and for
// text, or null and "n/a" where the stack does not count them: quic-go
// reports lost packets but not the frames it sent again.
func retransmissions(st carrier.Stats) (any, string) {
	if st.Stack == "quic" {
		return nil, "n/a"
	}
	return st.Retransmissions, strconv.FormatUint(st.Retransmissions, 10)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// progress returns a progress bar on stderr when it is a terminal, or
// a writer that counts nothing. size < 0 means unknown.
func (o *output) progress(size int64, what string) io.Writer {
	if o.json || !term.IsTerminal(int(os.Stderr.Fd())) {
		return io.Discard
	}
	return progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
	)
}

// rate formats bytes per second.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	bps := float64(n) * 8 / d.Seconds()
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.2f Mbit/s", bps/1e6)
	}
	return fmt.Sprintf("%.2f kbit/s", bps/1e3)
}

// plural returns word, with an s unless n is 1.
func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

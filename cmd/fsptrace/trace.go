package main

import (
	"encoding/json"
	"io"
	"math"

	"gonum.org/v1/plot/plotter"

	"github.com/postsockets/postsockets/internal/qlog"
	"github.com/postsockets/postsockets/post"
)

// series are the chart's data, against time in seconds.
type series struct {
	Role string
	// Sequence numbers: data packets sent, resent, declared lost, and
	// the cumulative acknowledgement.
	Sent, Resent, Lost, Acked plotter.XYs
	// Congestion window and bytes in flight, in KiB.
	CWND, InFlight plotter.XYs
	// RTT estimates in milliseconds.
	LatestRTT, SmoothedRTT, MinRTT plotter.XYs
	Events                         int  // FSP events read
	Truncated                      bool // the trace ended inside a record
}

// maxValue bounds the values charted: larger ones, which no trace FSP
// writes has, are dropped rather than stretch the axes.
const maxValue = 1e15

func ok(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.Abs(v) > maxValue {
			return false
		}
	}
	return true
}

func add(xys *plotter.XYs, x, y float64) {
	if ok(x, y) {
		*xys = append(*xys, plotter.XY{X: x, Y: y})
	}
}

// parse reads an FSP trace (docs/tracing.md) into series.
func parse(r io.Reader) (*series, error) {
	rd := qlog.NewReader(r)
	h, err := rd.Header()
	if err != nil {
		return nil, err
	}
	s := &series{Role: h.Trace.VantagePoint.Type}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := s.add(e); err != nil {
			return nil, err
		}
	}
	s.Truncated = rd.Truncated
	if s.Events == 0 {
		return nil, post.Errorf(post.ErrInvalid, "fsptrace: no FSP events in the trace")
	}
	return s, nil
}

// add charts one event.
func (s *series) add(e qlog.Event) error {
	t := e.Time / 1e3
	var err error
	switch e.Name {
	case "fsp:packet_sent":
		var p struct {
			Seq            float64 `json:"seq"`
			Length         int     `json:"length"`
			EOT            bool    `json:"end_of_message"`
			Retransmission bool    `json:"retransmission"`
			Type           string  `json:"packet_type"`
		}
		if err = json.Unmarshal(e.Data, &p); err == nil && (p.Length > 0 || p.EOT) && p.Type != "CLIENT_AUTH" {
			if p.Retransmission {
				add(&s.Resent, t, p.Seq)
			} else {
				add(&s.Sent, t, p.Seq)
			}
		}
	case "fsp:packet_lost":
		var p struct {
			Seq float64 `json:"seq"`
		}
		if err = json.Unmarshal(e.Data, &p); err == nil {
			add(&s.Lost, t, p.Seq)
		}
	case "fsp:packets_acked":
		var p struct {
			Expected float64 `json:"expected"`
		}
		if err = json.Unmarshal(e.Data, &p); err == nil && p.Expected > 0 {
			add(&s.Acked, t, p.Expected-1)
		}
	case "fsp:metrics_updated":
		var m struct {
			MinRTT      float64 `json:"min_rtt"`
			SmoothedRTT float64 `json:"smoothed_rtt"`
			LatestRTT   float64 `json:"latest_rtt"`
			CWND        float64 `json:"congestion_window"`
			InFlight    float64 `json:"bytes_in_flight"`
		}
		if err = json.Unmarshal(e.Data, &m); err == nil {
			add(&s.CWND, t, m.CWND/1024)
			add(&s.InFlight, t, m.InFlight/1024)
			if m.LatestRTT > 0 {
				add(&s.LatestRTT, t, m.LatestRTT)
				add(&s.SmoothedRTT, t, m.SmoothedRTT)
				add(&s.MinRTT, t, m.MinRTT)
			}
		}
	}
	if len(e.Name) > 4 && e.Name[:4] == "fsp:" {
		s.Events++
	}
	if err != nil {
		return post.Errorf(post.ErrMalformed, "fsptrace: %s at %v ms: %v", e.Name, e.Time, err)
	}
	return nil
}

// thin keeps at most n points of xys, evenly spaced, so that a long
// trace makes a chart of bounded size.
func thin(xys plotter.XYs, n int) plotter.XYs {
	if len(xys) <= n {
		return xys
	}
	out := make(plotter.XYs, 0, n)
	for i := range n {
		out = append(out, xys[i*len(xys)/n])
	}
	return out
}

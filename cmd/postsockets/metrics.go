package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postsockets/postsockets/carrier"
)

// track adds c to the Carriers the exporter reports; nil does nothing.
func (o *options) track(c *carrier.Carrier) {
	if c == nil || o.collector == nil {
		return
	}
	o.collector.mu.Lock()
	o.collector.cs = append(o.collector.cs, c)
	o.collector.mu.Unlock()
}

// collector reports the Stats of the tracked Carriers.
type collector struct {
	mu sync.Mutex
	cs []*carrier.Carrier
}

var (
	descBytes = prometheus.NewDesc("postsockets_bytes_total", "Message bytes by direction and stack.", []string{"dir", "stack", "remote"}, nil)
	descMsgs  = prometheus.NewDesc("postsockets_messages_total", "Messages by direction and stack.", []string{"dir", "stack", "remote"}, nil)
	descRetx  = prometheus.NewDesc("postsockets_retransmissions_total", "Packets retransmitted.", []string{"stack", "remote"}, nil)
	descRTT   = prometheus.NewDesc("postsockets_rtt_seconds", "Smoothed round-trip time.", []string{"stack", "remote"}, nil)
)

func (*collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBytes
	ch <- descMsgs
	ch <- descRetx
	ch <- descRTT
}

func (k *collector) Collect(ch chan<- prometheus.Metric) {
	k.mu.Lock()
	cs := append([]*carrier.Carrier(nil), k.cs...)
	k.mu.Unlock()
	for _, c := range cs {
		st := c.Stats()
		r := st.Path.Remote.String()
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesSent), "sent", st.Stack, r)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesReceived), "received", st.Stack, r)
		ch <- prometheus.MustNewConstMetric(descMsgs, prometheus.CounterValue, float64(st.MessagesSent), "sent", st.Stack, r)
		ch <- prometheus.MustNewConstMetric(descMsgs, prometheus.CounterValue, float64(st.MessagesReceived), "received", st.Stack, r)
		ch <- prometheus.MustNewConstMetric(descRetx, prometheus.CounterValue, float64(st.Retransmissions), st.Stack, r)
		ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, st.SmoothedRTT.Seconds(), st.Stack, r)
	}
}

// serveMetrics serves /metrics on -metrics until ctx ends.
func (o *options) serveMetrics(ctx context.Context) error {
	if o.metrics == "" {
		return nil
	}
	o.collector = &collector{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(o.collector)
	ln, err := net.Listen("tcp", o.metrics)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); hs.Close() }()
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.out.note("metrics: %v", err)
		}
	}()
	o.out.note("metrics on http://%s/metrics", ln.Addr())
	o.out.event(map[string]any{"event": "metrics", "url": "http://" + ln.Addr().String() + "/metrics"})
	return nil
}

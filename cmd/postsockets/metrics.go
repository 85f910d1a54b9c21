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
	"github.com/postsockets/postsockets/httpcarrier"
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

// The -metrics listener's bounds: a scraper needs a connection or two,
// and the address may be reachable by anyone. Before, any address could
// hold any number of connections, idle, forever.
const (
	metricsConnsPerAddr = 8
	metricsConns        = 64
)

// serveMetrics serves /metrics on -metrics until ctx ends, with the
// bounds above, 8 KiB request heads, and requests read within 10 s.
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
	lim := httpcarrier.LimitListener(ln, metricsConnsPerAddr, metricsConns)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    8 << 10,
		ConnState:         lim.ConnState,
	}
	go func() { <-ctx.Done(); hs.Close() }()
	go func() {
		if err := hs.Serve(lim); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.out.note("metrics: %v", err)
		}
	}()
	o.out.note("metrics on http://%s/metrics", ln.Addr())
	o.out.event(map[string]any{"event": "metrics", "url": "http://" + ln.Addr().String() + "/metrics"})
	return nil
}

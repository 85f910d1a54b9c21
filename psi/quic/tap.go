package quic

import "github.com/quic-go/quic-go/qlogwriter"

// tapTrace is a qlogwriter.Trace that shows every event to tap, then
// passes it to next (nil for none): the events hooks and the 0-RTT
// parameters gate watch a connection's qlog events this way.
type tapTrace struct {
	tap  func(qlogwriter.Event)
	next qlogwriter.Trace
}

func (t *tapTrace) AddProducer() qlogwriter.Recorder {
	r := &tapRecorder{tap: t.tap}
	if t.next != nil {
		r.next = t.next.AddProducer()
	}
	return r
}

type tapRecorder struct {
	tap  func(qlogwriter.Event)
	next qlogwriter.Recorder // or nil
}

func (r *tapRecorder) RecordEvent(ev qlogwriter.Event) {
	r.tap(ev)
	if r.next != nil {
		r.next.RecordEvent(ev)
	}
}

func (r *tapRecorder) Close() error {
	if r.next != nil {
		return r.next.Close()
	}
	return nil
}

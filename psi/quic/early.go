package quic

import (
	"context"
	"sync"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// paramsGate orders a 0-RTT dial's root stream and the server's transport
// parameters. quic-go installs those parameters on its connection's
// goroutine without a lock, and OpenStream reads them
// (quic-go/quic-go#4303): opening the root while the server's reply is
// being handled is a data race. The reply usually comes long after the
// root is opened, but not on a loaded machine. quic-go records a
// parameters_set event for the server's parameters just before it
// installs them; gateTracer marks the gate then, under its lock. The root
// is opened under the same lock while the gate is unmarked, and otherwise
// once the handshake is complete, after the parameters are installed.
type paramsGate struct {
	mu      sync.Mutex
	arrived bool
}

// gateTracer wraps next (nil for none) so that a connection's trace marks
// the paramsGate of its hooks (see withHooks) when the server's transport
// parameters arrive.
func gateTracer(next func(context.Context, bool, quicgo.ConnectionID) qlogwriter.Trace) func(context.Context, bool, quicgo.ConnectionID) qlogwriter.Trace {
	return func(ctx context.Context, isClient bool, id quicgo.ConnectionID) qlogwriter.Trace {
		var inner qlogwriter.Trace
		if next != nil {
			inner = next(ctx, isClient, id)
		}
		ch := hooksOf(ctx)
		if ch == nil || !isClient {
			return inner
		}
		return &tapTrace{tap: ch.gate.observe, next: inner}
	}
}

// observe marks the gate when the server's transport parameters arrive.
func (g *paramsGate) observe(ev qlogwriter.Event) {
	if ps, ok := ev.(qlog.ParametersSet); ok && ps.Initiator == qlog.InitiatorRemote {
		g.mu.Lock()
		g.arrived = true
		g.mu.Unlock()
	}
}

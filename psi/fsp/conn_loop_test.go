package fsp

import (
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// inPacketOf copies b into a queued datagram, as the socket reader does.
func inPacketOf(b []byte, from *peerAddr) *inPacket {
	buf := getBuf()
	if cap(*buf) < len(b) {
		*buf = make([]byte, len(b))
	}
	*buf = (*buf)[:cap(*buf)]
	copy(*buf, b)
	return &inPacket{buf: buf, n: len(b), from: *from}
}

// inject processes b at c synchronously, as c's loop would (without the
// flush); b itself is not changed. route sends it through routeClone.
func inject(c *Conn, b []byte, from *peerAddr, route bool) *Conn {
	in := inPacketOf(b, from)
	defer func() {
		if in.buf != nil {
			putBuf(in.buf)
		}
	}()
	var pkt wire.Packet
	if wire.Parse((*in.buf)[:in.n], &pkt) != nil {
		return nil
	}
	if route {
		return c.routeClone(in, &pkt, time.Now())
	}
	return c.handlePacket(in, &pkt, time.Now())
}

// settle waits (at most a second) until the loops of t's connections have
// processed what the reader queued.
func (t *Transport) settle() {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		t.mu.Lock()
		busy := false
		for _, c := range t.conns {
			c.inq.mu.Lock()
			busy = busy || c.inq.running || len(c.inq.pkts) > 0
			c.inq.mu.Unlock()
		}
		t.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
}

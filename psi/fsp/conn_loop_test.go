package fsp

import (
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
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

// settle waits until t's socket holds no datagram and the loops of its
// connections have processed what the reader queued. It waited for the
// loops only, at most a second: under the race detector on a loaded host
// a flood's tail was still in the socket then, and TestAttackForgedMultiply
// counted 1,280 of 2,112 forged packets dropped by the connection.
func (t *Transport) settle() {
	// An unmeasured safety limit: the loop may lag a flood by seconds
	// on a loaded host under the race detector.
	deadline := time.Now().Add(10 * time.Second)
	idle := 0
	for time.Now().Before(deadline) && idle < 2 {
		if t.busy() {
			idle = 0
		} else {
			idle++ // twice in a row: a batch read may sit between the two
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// busy reports whether the socket still holds datagrams or a
// connection's loop has some queued or in hand.
func (t *Transport) busy() bool {
	if t.udp != nil {
		if queued, _, _ := sockio.Backlog(t.udp); queued > 0 {
			return true
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		c.inq.mu.Lock()
		busy := c.inq.running || len(c.inq.pkts) > 0
		c.inq.mu.Unlock()
		if busy {
			return true
		}
	}
	return false
}

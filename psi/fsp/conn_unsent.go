package fsp

// The unsent backlog. A bulk writer that kept the whole send buffer
// (SendBuffer, 8 MiB) full held, past the packets in flight, megabytes
// written but not yet sent (4-5 MiB a flow in BenchmarkFourFlows):
// packetized long before they were sealed, they were out of the cache by
// then, and four flows held four times as much. So while packets are in
// flight, whose acknowledgements wake it, a writer waits once maxUnsent
// packets wait to be sent, as quic-go's stream writer waits for its data
// to be packed. With nothing in flight (the peer's window is closed and
// everything sent is acknowledged) the writer fills the send buffer as
// before: SendBuffer still bounds, and a writer may still fill, what the
// peer has not acknowledged.

// maxUnsent is the most packets written and not yet sent that a writer
// adds to while packets are in flight: two of its batches of MaxPayload
// bytes. Larger packets count for their size: at the jumbo size (8,972
// bytes) about 20 hold as much, where 128 held 1.1 MB, beyond a core's
// cache again.
const maxUnsent = 2 * maxBatch

// unsentHold reports whether a writer should wait before packetizing
// more: maxUnsent packets of MaxPayload bytes (as many bytes in packets
// of the current size) wait to be sent while others are in flight.
// Milk connections never wait here (their send buffer overflows into
// superseded messages). Called with c.mu held.
func (c *Conn) unsentHold() bool {
	return !c.milk && c.snd.Unsent()*c.writePayload() >= maxUnsent*MaxPayload && c.snd.BytesInFlight() > 0
}

// unsentWake wakes a writer held by unsentHold once packets were sent.
// An acknowledgement, the writer's usual wake-up, may come before the
// packets it lets out are sent. Called with c.mu held.
func (c *Conn) unsentWake() {
	if c.unsentWait && !c.unsentHold() {
		c.unsentWait = false
		signal(c.writable)
	}
}

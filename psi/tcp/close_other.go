//go:build !linux

package tcp

import (
	"net"
	"time"
)

// sendState cannot read the send queue here; Close waits for the peer's
// end of stream instead.
func sendState(c *net.TCPConn) (unacked int, reset, ok bool) { return 0, false, false }

// unanswered cannot tell here; the kernel's retransmission limit applies.
func unanswered(c *net.TCPConn, d time.Duration) bool { return false }

// ackReporting says whether sendState can read the send queue.
const ackReporting = false

// peerFinished cannot tell here: a write blocked on a closed peer ends
// when the kernel learns of it.
func peerFinished(c *net.TCPConn) bool { return false }

// finReporting says whether peerFinished can tell.
const finReporting = false

// peerReset cannot tell here: an AcceptFork learns of a reset when the
// connection is read.
func peerReset(c *net.TCPConn) bool { return false }

// resetReporting says whether peerReset can tell.
const resetReporting = false

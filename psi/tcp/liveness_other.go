//go:build !linux

package tcp

import "net"

// liveReporting says whether sampleLive can tell: not here, so no end
// offers or takes liveness frames.
const liveReporting = false

// sampleLive cannot tell here.
func sampleLive(*net.TCPConn) (liveSample, bool) { return liveSample{}, false }

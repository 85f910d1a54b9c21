//go:build !linux

package tcp

import "net"

// tcpSample is empty where TCP_INFO cannot be read: the trace holds the
// connection's start and end only.
type tcpSample struct{}

func sampleTCP(*net.TCPConn) (tcpSample, bool) { return tcpSample{}, false }

//go:build !linux

package tcp

import "net"

// unread reports false where the kernel's receive queue is not read.
func unread(*net.TCPConn) bool { return false }

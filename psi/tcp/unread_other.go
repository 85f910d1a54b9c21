//go:build !linux

package tcp

import "net"

// unread reports false where the kernel's receive queue is not read.
func unread(*net.TCPConn) bool { return false }

// discardUnread does nothing where the receive queue is not read: closing
// with unread input may end with a reset.
func discardUnread(*net.TCPConn) {}

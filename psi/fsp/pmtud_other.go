//go:build !linux

package fsp

import "net"

// setNoFragment is Linux only: elsewhere the platform's default applies,
// and a path that fragments may let a probe pass that is larger than its
// MTU.
func setNoFragment(*net.UDPConn) {}

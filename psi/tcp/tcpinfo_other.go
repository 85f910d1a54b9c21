//go:build !linux

package tcp

import (
	"net"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// fillPathInfo leaves the estimates zero where TCP_INFO is not read.
func fillPathInfo(*net.TCPConn, *post.Path) {}

// backoff is unknown where TCP_INFO is not read.
func backoff(*net.TCPConn) (uint8, bool) { return 0, false }

// fillStats leaves the counters zero where TCP_INFO is not read.
func fillStats(*net.TCPConn, *psi.TransientStats) {}

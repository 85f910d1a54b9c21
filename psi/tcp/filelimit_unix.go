//go:build unix

package tcp

import "syscall"

// fileLimit returns the process's open-file limit, or 0 if unknown.
func fileLimit() int {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return 0
	}
	return int(min(r.Cur, 1<<30))
}

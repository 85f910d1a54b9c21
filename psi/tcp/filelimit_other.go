//go:build !unix

package tcp

// fileLimit returns 0: no open-file limit is known here.
func fileLimit() int { return 0 }

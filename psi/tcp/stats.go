package tcp

import "github.com/postsockets/postsockets/psi"

// TransientStats (psi.StatsReporter) reports the kernel's TCP_INFO
// counters on Linux; elsewhere only what Path reports.
func (t *transient) TransientStats() psi.TransientStats {
	var s psi.TransientStats
	if t.tcp != nil {
		fillStats(t.tcp, &s)
	}
	return s
}

package quic

import "github.com/postsockets/postsockets/psi"

// TransientStats (psi.StatsReporter) reports quic-go's ConnectionStats
// of the connection the transient's stream belongs to.
func (t *Transient) TransientStats() psi.TransientStats {
	s := t.c.qc.ConnectionStats()
	return psi.TransientStats{
		PacketsSent: s.PacketsSent, PacketsReceived: s.PacketsReceived, PacketsLost: s.PacketsLost,
		BytesSent: s.BytesSent, BytesReceived: s.BytesReceived,
		SmoothedRTT: s.SmoothedRTT, RTTVar: s.MeanDeviation, MinRTT: s.MinRTT,
		CongestionWindow: int(s.CongestionWindow),
	}
}

//go:build linux

package tcp

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpSample is one TCP_INFO sample: times in milliseconds, sizes in
// bytes, rates in bytes per second.
type tcpSample struct {
	SmoothedRTT   float64 `json:"smoothed_rtt"`
	RTTVariance   float64 `json:"rtt_variance"`
	MinRTT        float64 `json:"min_rtt"`
	CWND          uint64  `json:"congestion_window"`
	SSThresh      uint64  `json:"ssthresh"`        // 0 until the first loss
	InFlight      uint64  `json:"bytes_in_flight"` // unacknowledged segments times the MSS
	Retransmits   uint32  `json:"retransmits"`     // segments retransmitted in total
	Lost          uint32  `json:"lost"`            // segments presumed lost now
	BytesSent     uint64  `json:"bytes_sent"`
	BytesRetrans  uint64  `json:"bytes_retransmitted"`
	BytesAcked    uint64  `json:"bytes_acked"`
	BytesReceived uint64  `json:"bytes_received"`
	DeliveryRate  uint64  `json:"delivery_rate"`
	PacingRate    uint64  `json:"pacing_rate"`
	CAState       uint8   `json:"ca_state"` // 0 open, 1 disorder, 2 CWR, 3 recovery, 4 loss
}

// sampleTCP reads TCP_INFO; false if the socket is gone.
func sampleTCP(c *net.TCPConn) (tcpSample, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return tcpSample{}, false
	}
	var info *unix.TCPInfo
	if cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil || info == nil {
		return tcpSample{}, false
	}
	mss := uint64(info.Snd_mss)
	ssthresh := uint64(info.Snd_ssthresh) * mss
	if info.Snd_ssthresh >= 0x7fffffff {
		ssthresh = 0 // not set yet: infinite
	}
	pacing := info.Pacing_rate
	if pacing == ^uint64(0) {
		pacing = 0 // unlimited
	}
	return tcpSample{
		SmoothedRTT: float64(info.Rtt) / 1e3, RTTVariance: float64(info.Rttvar) / 1e3, MinRTT: float64(info.Min_rtt) / 1e3,
		CWND: uint64(info.Snd_cwnd) * mss, SSThresh: ssthresh,
		InFlight: uint64(info.Unacked) * mss, Retransmits: info.Total_retrans, Lost: info.Lost,
		BytesSent: info.Bytes_sent, BytesRetrans: info.Bytes_retrans, BytesAcked: info.Bytes_acked,
		BytesReceived: info.Bytes_received, DeliveryRate: info.Delivery_rate, PacingRate: pacing,
		CAState: info.Ca_state,
	}, true
}

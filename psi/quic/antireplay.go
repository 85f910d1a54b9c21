package quic

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"time"

	"github.com/postsockets/postsockets/internal/strike"
)

// A listener takes 0-RTT data on a session ticket at most once, and only
// within zeroRTTWindow of the ticket's issue (RFC 8446 §8.1, single-use
// tickets): crypto/tls keeps no anti-replay state of its own. A ticket
// seen before, too old, or met when the register is full still resumes
// the session, in one round trip, and the client sends its 0-RTT data
// again after the handshake.
const (
	zeroRTTWindow = 10 * time.Minute
	maxZeroRTT    = 1 << 16
	issuedPrefix  = "postsockets/issued:"
)

// guardZeroRTT installs the anti-replay check on a listener's TLS
// configuration: tickets carry their issue time, and each ticket's
// identity is recorded in a bounded strike register when it brings
// 0-RTT data.
func guardZeroRTT(tc *tls.Config) {
	reg := strike.New(zeroRTTWindow, maxZeroRTT)
	tc.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		stamp := binary.BigEndian.AppendUint64([]byte(issuedPrefix), uint64(time.Now().UnixMilli()))
		ss.Extra = append(ss.Extra, stamp)
		return tc.EncryptTicket(cs, ss)
	}
	tc.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := tc.DecryptTicket(identity, cs)
		if err != nil || ss == nil || !ss.EarlyData {
			return ss, err
		}
		issued, ok := issuedAt(ss.Extra)
		if !ok || reg.Check(identity, issued, time.Now()) != strike.Fresh {
			ss.EarlyData = false
		}
		return ss, nil
	}
}

// issuedAt finds the issue time guardZeroRTT put in a ticket.
func issuedAt(extra [][]byte) (time.Time, bool) {
	for _, e := range extra {
		if len(e) == len(issuedPrefix)+8 && bytes.HasPrefix(e, []byte(issuedPrefix)) {
			return time.UnixMilli(int64(binary.BigEndian.Uint64(e[len(issuedPrefix):]))), true
		}
	}
	return time.Time{}, false
}

package fsp

import (
	"time"

	"github.com/postsockets/postsockets/internal/strike"
)

// Anti-replay for resumption (RFC 8446 §8.2 and §8.3): a RESTORE names
// when it was sent as the ticket's issue time plus the age the client
// measured. A listener takes it only if that time is within strikeWindow
// of its own clock, and only once: the strike register remembers each
// accepted RESTORE's nonce for as long as a copy could still fall within
// the window. The register is bounded; when full, a RESTORE is sent to
// a full handshake instead, never accepted unchecked. A second register
// of the same size remembers the tickets 0-RTT was taken on: a client
// reuses a ticket for resumption, and two of its dials may take one for
// 0-RTT at the same instant; the second resumes without (when full,
// every 0-RTT RESTORE does).
const (
	strikeWindow = 10 * time.Second
	maxStrikes   = 1 << 14
)

func newStrikes() *strike.Register { return strike.New(strikeWindow, maxStrikes) }

package fsp

import "time"

// The idle timeout judges the peer's silence, not ours. On a starved host
// (5,000 connections at GOMAXPROCS=1 under load, TestManyDials) the
// socket's reader can wait tens of seconds for a core while the peer's
// keep-alives pile up unread in the socket, and a connection's timer can
// fire seconds late: neither is the peer's silence. So, as deferLoss does
// for a loss timeout and carrier's receive budget for a stall, the idle
// timeout is put off (Conn.idleGrace, reset by any packet from the peer):
//
//   - by the lateness of the connection's timer beyond idleLateSlack, time
//     the process did not run it;
//   - while datagrams wait unread for the connection (inputWaiting), by
//     idleWaitStep at a time.
//
// The grace is at most the idle timeout itself: a peer silent for twice
// IdleTimeout is declared dead whatever our own delays.

const (
	// idleLateSlack is the timer lateness that counts as on time: Go's
	// timers fire up to a millisecond or so late on an idle host, and a
	// busy one adds scheduling delays that are no starvation.
	idleLateSlack = 20 * time.Millisecond
	// idleWaitDiv divides the idle timeout into the steps by which
	// input waiting puts the timeout off (1 s at the 30 s default).
	idleWaitDiv = 30
)

// durMs is a duration in milliseconds, in four bytes (Conn stays in its
// size class, pending_mem_test.go).
type durMs int32

func (m durMs) d() time.Duration { return time.Duration(m) * time.Millisecond }

func toMs(d time.Duration) durMs {
	return durMs(min(d/time.Millisecond, 1<<31-1))
}

// idleExpired reports whether the peer has been silent for the idle
// timeout at now, discounting our own delays (the timer fired late by
// late; input waits unread), and records the grace given. Called from
// onTimer with c.mu held.
func (c *Conn) idleExpired(now time.Time, idle, late time.Duration) bool {
	silent := now.Sub(c.lastRecv)
	if silent < idle {
		// The common case; nor is the socket looked at.
		grace, _ := idleDecide(silent, idle, c.idleGrace.d(), late, false)
		c.idleGrace = toMs(grace)
		return false
	}
	grace, dead := idleDecide(silent, idle, c.idleGrace.d(), late, c.inputWaiting())
	c.idleGrace = toMs(grace)
	return dead
}

// idleDecide is the idle timeout's decision: given how long the peer has
// been silent, the grace given so far, how late the timer fired and
// whether datagrams wait unread, it returns the new grace and whether the
// peer is declared dead. The grace never passes idle.
func idleDecide(silent, idle, grace, late time.Duration, waiting bool) (time.Duration, bool) {
	if late > idleLateSlack {
		grace += late - idleLateSlack
	}
	grace = min(grace, idle)
	if silent < idle+grace {
		return grace, false
	}
	if waiting && grace < idle {
		// Read what waits first: put the timeout off a step past now.
		return min(silent-idle+max(idle/idleWaitDiv, time.Millisecond), idle), false
	}
	return grace, true
}

package fsp

import (
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Ticket delivery (see doc.go, "Resumption and 0-RTT"). NEW_TICKET has
// no sequence number, so the reliable sender does not repeat it: the
// initiator acknowledges it instead, with wire.FlagTicketAck on every
// protected packet of the connection once one arrived (and an immediate
// acknowledgement when it does), and the listener sends a new ticket
// until that flag comes: after max(RTO, 50 ms), doubling up to
// congestion.MaxRTO, until the connection ends, or the initiator closed
// it and its time-wait (which still takes a ticket) is over.
// Before the initiator confirms a 0-RTT resumption only its repeated
// RESTORE or the copy carrying the first message gets one
// (conn_halfrtt.go, conn_early.go), within the amplification bound.

// ticketResend is a listener's ticket awaiting the initiator's
// acknowledgement: when to send a new one, and how many went. Apart from
// Conn, which every pending handshake holds.
type ticketResend struct {
	at    time.Time
	tries uint8
}

// ticketFlag is the flag acknowledging the listener's ticket once one
// came. Called with c.mu held.
func (c *Conn) ticketFlag() uint8 {
	if c.ticketGot {
		return wire.FlagTicketAck
	}
	return 0
}

// onTicket takes a NEW_TICKET's plaintext pt at the initiator: it caches
// the ticket and acknowledges at once, so that the listener stops
// resending. Called with c.mu held.
func (c *Conn) onTicket(pt []byte) {
	if !c.initiator || c.parent != nil {
		return
	}
	c.storeTicket(pt)
	c.ticketGot, c.ackNow = true, true
}

// onTicketAck stops the listener's resends when an authenticated packet
// of the initiator's says its ticket arrived. Called with c.mu held.
func (c *Conn) onTicketAck(pkt *wire.Packet) {
	if pkt.Flags&wire.FlagTicketAck != 0 && !c.initiator {
		c.ticket = nil
	}
}

// ticketSent schedules the next resend of a ticket just issued. Called
// with c.mu held.
func (c *Conn) ticketSent(now time.Time) {
	if c.ticket == nil {
		c.ticket = &ticketResend{}
	}
	c.ticket.at = now.Add(c.ticketRetry())
	c.ticket.tries = min(c.ticket.tries+1, 16)
}

// ticketRetry is how long a ticket waits for its acknowledgement.
func (c *Conn) ticketRetry() time.Duration {
	var tries uint8
	if c.ticket != nil {
		tries = c.ticket.tries
	}
	return min(max(c.rtt.RTO(), minProbeInterval)<<tries, congestion.MaxRTO)
}

// ticketDue returns when the timer resends the ticket: never before the
// initiator confirms a 0-RTT resumption. Called with c.mu held.
func (c *Conn) ticketDue() time.Time {
	if c.earlyResp != nil || c.ticket == nil {
		return time.Time{}
	}
	return c.ticket.at
}

// onTicketTimer resends an unacknowledged ticket. Called with c.mu held
// from the timer.
func (c *Conn) onTicketTimer(now time.Time) {
	at := c.ticketDue()
	if at.IsZero() || now.Before(at) {
		return
	}
	if c.peerReleased && now.Sub(c.lastRecv) > maxTimeWait {
		c.ticket = nil // past the initiator's time-wait: gone
		return
	}
	c.issueTicket(now)
}

package tcp

import (
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// End-to-end liveness. TCP's keep-alives and its unacknowledged-data
// check hear from the next hop's kernel: behind a proxy or load balancer
// that went dark (it still acknowledges, reads and discards, but forwards
// nothing) they are satisfied for good, and an idle reader waits forever
// while a writer's bytes vanish. With liveness frames agreed in the hello,
// each end sends the framing's heartbeat when it has sent nothing for the
// keep-alive interval and everything it sent was acknowledged, and takes
// bytes arriving from the peer (counted by the kernel, read or not) as
// proof of life. A receive window shut on data we have not read excuses
// the silence: the peer cannot send then, and a paused reader's
// connection stays up. No byte for the idle timeout otherwise fails the
// transient with an error wrapping post.ErrTimeout.

// liveSample is what the kernel tells of the connection at one look.
type liveSample struct {
	received uint64        // bytes that arrived from the peer, read or not
	sent     uint64        // bytes we sent
	queued   int           // bytes written that the next hop has not acknowledged
	ackWait  time.Duration // how long sent data has waited for an acknowledgement
	shut     bool          // our receive window is shut on unread data
	over     bool          // no longer established: an end began closing, or a reset
}

// liveness decides, from samples, when to send a heartbeat and when the
// peer is dead.
type liveness struct {
	idle  time.Duration // silence that declares the peer dead
	every time.Duration // a heartbeat after this long without sending
	heard time.Time     // when bytes last arrived, or the silence was excused
	spoke time.Time     // when we last sent
	last  liveSample
}

func newLiveness(now time.Time, idle, every time.Duration) *liveness {
	return &liveness{idle: idle, every: every, heard: now, spoke: now}
}

// step takes a sample at now and reports whether to send a heartbeat
// and whether the peer is dead.
func (l *liveness) step(now time.Time, s liveSample) (beat, dead bool) {
	if s.received != l.last.received || s.shut || s.over {
		l.heard = now
	}
	if s.sent != l.last.sent {
		l.spoke = now
	}
	l.last = s
	if s.over {
		return false, false
	}
	if now.Sub(l.heard) >= l.idle {
		return false, true
	}
	if s.queued == 0 && now.Sub(l.spoke) >= l.every {
		l.spoke = now
		return true, false
	}
	return false, false
}

// liveIdle is the idle timeout this end offers or takes liveness frames
// for: zero where the framing has no heartbeat, the kernel cannot report
// what liveness needs, or keep-alives are switched off.
func (s *Stack) liveIdle(cfg *psi.Config) time.Duration {
	if _, ok := s.framer().(framer.Heartbeater); !ok || !liveReporting {
		return 0
	}
	if _, iv := s.keepAlive(cfg); iv < 0 {
		return 0
	}
	return cfg.Idle()
}

// liveEvery is the heartbeat interval for an agreed idle timeout: the
// keep-alive interval (Config.KeepAlive, else Stack.KeepAlive, else 15 s),
// at most a third of the idle timeout.
func (s *Stack) liveEvery(cfg *psi.Config, idle time.Duration) time.Duration {
	iv := cfg.KeepAlive
	if iv <= 0 {
		iv = s.KeepAlive
	}
	if iv <= 0 {
		iv = 15 * time.Second
	}
	return max(min(iv, idle/3), time.Millisecond)
}

// watchPeer ends the transient when data it sent has gone unacknowledged
// for the idle timeout (keep-alives detect a vanished peer only on an
// idle connection, and TCP_USER_TIMEOUT would also end one whose reader
// merely paused), and, with liveness frames agreed (live non-nil), sends
// them and ends the transient when the peer falls silent.
func (t *transient) watchPeer(idle time.Duration, live *liveness) {
	iv := max(idle/4, 100*time.Millisecond)
	if live != nil {
		iv = max(min(live.every/2, live.idle/4), 10*time.Millisecond)
	}
	tick := time.NewTicker(iv)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
		var err error
		if live != nil {
			err = t.checkLive(live, idle) // one look at the kernel for both checks
		} else if unanswered(t.tcp, idle) {
			err = errUnanswered(idle)
		}
		if err != nil {
			t.log.Debug("tcp: peer vanished", "err", err)
			if t.shut(err) {
				t.reset()
			}
			return
		}
	}
}

func errUnanswered(idle time.Duration) error {
	return post.Errorf(post.ErrTimeout, "peer silent for %v with data unacknowledged", idle)
}

// checkLive takes a sample for live, sends a heartbeat if it says so,
// and returns the error that ends the transient if the peer is dead:
// silent for live's idle timeout, or data unacknowledged for idle.
func (t *transient) checkLive(live *liveness, idle time.Duration) error {
	s, ok := sampleLive(t.tcp)
	if !ok {
		return nil
	}
	if s.ackWait >= idle {
		return errUnanswered(idle)
	}
	s.over = s.over || t.peerEnded.Load()
	beat, dead := live.step(time.Now(), s)
	if dead {
		return post.Errorf(post.ErrTimeout, "no byte from the peer for %v, though the path took ours (a middlebox that forwards nothing?)", live.idle)
	}
	if beat {
		t.heartbeat()
	}
	return nil
}

// heartbeat sends the framing's heartbeat, unless a write is under way
// or anything sent is still unacknowledged: then the write could block,
// and it is not needed.
func (t *transient) heartbeat() {
	if !t.wmu.TryLock() {
		return
	}
	defer t.wmu.Unlock()
	if t.isClosed() || t.werr != nil || t.wEnded || t.peerEnded.Load() || t.gone.Load() {
		return
	}
	if n, _, ok := sendState(t.tcp); !ok || n > 0 {
		return
	}
	if _, err := t.conn.Write(t.beat); err != nil {
		t.werr = wrap("send", t.path, err)
	}
}

// Package psitest checks that a psi.Transient keeps the delivery and close
// contract of docs/design.md, the way golang.org/x/net/nettest checks a
// net.Conn. Every stack runs TestTransient from its own tests:
//
//	func TestConformance(t *testing.T) {
//		psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
//			... dial and accept one pair, with tune applied to both configs ...
//		})
//	}
package psitest

import (
	"context"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi"
)

// Pair is one connected pair of root transients made for one case.
type Pair struct {
	// A dialled B; A forks and B accepts the forks.
	A, B psi.Transient
	// ExitA, if set, tears down A's sockets as the exit of A's process
	// would, after A's Close. The suite calls it at most once.
	ExitA func()
	// VanishB, if set, makes B's end disappear without a word: from then
	// on its packets are dropped both ways. Cases that need it are skipped
	// without it.
	VanishB func()
	// DarkenPath, if set, makes the middlebox between A and B (a Relay)
	// go dark: it still takes what either end sends, and a TCP relay's
	// kernel acknowledges it, but it forwards nothing. Cases that need it
	// are skipped without it.
	DarkenPath func()
}

// MakePair makes a fresh Pair, with tune applied to the psi.Config of both
// ends before dialling and listening. It registers the cleanup of
// everything it made with t.
type MakePair func(t *testing.T, tune func(*psi.Config)) Pair

// Option changes how TestTransient runs.
type Option func(*options)

type options struct {
	skip map[string]string
	only map[string]bool
}

// Only runs just the named cases, for a pair that suits only them.
func Only(names ...string) Option {
	return func(o *options) {
		if o.only == nil {
			o.only = map[string]bool{}
		}
		for _, n := range names {
			o.only[n] = true
		}
	}
}

// Skip skips the named case (such as "ForkBurst") with the reason, which
// should name the pending fix.
func Skip(name, reason string) Option {
	return func(o *options) { o.skip[name] = reason }
}

// Timeouts the cases configure, short so the suite runs in seconds, yet
// long enough that a loaded machine under the race detector does not take
// a stall for a dead peer.
const (
	idleTimeout = 2500 * time.Millisecond
	linger      = 3 * time.Second
)

type testCase struct {
	name string
	fn   func(t *testing.T, mp MakePair)
}

var cases = []testCase{
	{"Boundaries", testBoundaries},
	{"NoEmptyEndPart", testNoEmptyEndPart},
	{"PartialMessages", testPartialMessages},
	{"LargeMessageInParts", testLargeInParts},
	{"Limits", testLimits},
	{"CancelledContext", testCancelledContext},
	{"PassedDeadline", testPassedDeadline},
	{"ForkBothWays", testForkBothWays},
	{"ForkBurst", testForkBurst},
	{"AcceptForkPeerClosed", testAcceptForkPeerClosed},
	{"SlowReaderAfterPeerClose", testSlowReaderAfterPeerClose},
	{"CloseReadAll", testCloseReadAll},
	{"CloseUnreadByPeer", testCloseUnreadByPeer},
	{"ConcurrentClose", testConcurrentClose},
	{"CloseWhilePeerWrites", testCloseWhilePeerWrites},
	{"CloseWhilePeerBlocked", testCloseWhilePeerBlocked},
	{"ClosePrompt", testClosePrompt},
	{"CloseWithUnreadData", testCloseWithUnreadData},
	{"BothCloseUnread", testBothCloseUnread},
	{"PeerCloseEndsSends", testPeerCloseEndsSends},
	{"CloseContextBounded", testCloseContextBounded},
	{"Abort", testAbort},
	{"AbortMessage", testAbortMessage},
	{"PausedReader", testPausedReader},
	{"VanishedPeer", testVanishedPeer},
	{"DarkPath", testDarkPath},
	{"ExitAfterClose", testExitAfterClose},
}

// TestTransient runs every case of the contract, each as a subtest on a
// fresh pair from mp.
func TestTransient(t *testing.T, mp MakePair, opts ...Option) {
	o := options{skip: map[string]string{}}
	for _, f := range opts {
		f(&o)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := o.skip[c.name]; ok {
				t.Skip(why)
			}
			if o.only != nil && !o.only[c.name] {
				t.Skip("not run for this pair")
			}
			c.fn(t, mp)
		})
	}
}

// short tunes both ends with the suite's short timeouts.
func short(cfg *psi.Config) {
	cfg.IdleTimeout = idleTimeout
	cfg.KeepAlive = idleTimeout / 4
	cfg.Linger = linger
}

// tuned combines short with more settings.
func tuned(more func(*psi.Config)) func(*psi.Config) {
	return func(cfg *psi.Config) {
		short(cfg)
		if more != nil {
			more(cfg)
		}
	}
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

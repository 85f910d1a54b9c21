package association

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Candidate is one stack on one path, a contender in a race.
type Candidate struct {
	Stack  psi.Stack
	Local  netip.AddrPort
	Remote netip.AddrPort
}

func (c Candidate) String() string { return c.Stack.Name() + "/" + c.Remote.String() }

func (c Candidate) key() candidateKey { return candidateKey{c.Stack.Name(), c.Local.Addr(), c.Remote} }

// Candidates resolves the Remote and returns the ordered candidate list:
// stacks filtered and ordered by policy, addresses interleaved by family,
// UDP- and TCP-based stacks interleaved, and candidates that failed or
// lost within Config.FailureTTL moved last, so the next race goes straight
// to what worked and returns to the preferred order once that expires.
// A candidate on port 0 is left out; a Remote with no other fails with an
// error wrapping post.ErrInvalid.
func (a *Association) Candidates(ctx context.Context) ([]Candidate, error) {
	stacks, err := a.stacks()
	if err != nil {
		return nil, err
	}
	addrs, err := a.Resolve(ctx)
	if err != nil {
		return nil, err
	}
	var byNet [2][]Candidate // udp, tcp
	portless := false
	for _, s := range stacks {
		n := 0
		if psi.StackNetwork(s) == "tcp" {
			n = 1
		}
		for _, ad := range addrs {
			ad = netip.AddrPortFrom(ad.Addr(), a.cfg.Remote.PortFor(s.Name(), ad.Port()))
			if ad.Port() == 0 {
				// Nothing listens on port 0: a UDP stack would wait out
				// its handshake timeout for an answer.
				portless = true
				continue
			}
			for _, local := range a.localsFor(ad) {
				byNet[n] = append(byNet[n], Candidate{Stack: s, Local: local, Remote: ad})
			}
		}
	}
	var out []Candidate
	for i := 0; i < len(byNet[0]) || i < len(byNet[1]); i++ {
		for n := range byNet {
			if i < len(byNet[n]) {
				out = append(out, byNet[n][i])
			}
		}
	}
	// Stack preference is primary: keep the most preferred stack's first
	// candidate at the head even if it runs over TCP.
	if len(out) > 0 && len(stacks) > 0 && out[0].Stack != stacks[0] {
		if i := slices.IndexFunc(out, func(c Candidate) bool { return c.Stack == stacks[0] }); i > 0 {
			c := out[i]
			out = slices.Delete(out, i, i+1)
			out = slices.Insert(out, 0, c)
		}
	}
	if len(out) == 0 && portless {
		return nil, post.Errorf(post.ErrInvalid, "remote %s names port 0", a.cfg.Remote)
	}
	if len(out) == 0 {
		return nil, post.Errorf(post.ErrNoCandidates, "no address of %s fits local %s", a.cfg.Remote, a.cfg.Local)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	ttl := a.failureTTL()
	failed := func(c Candidate) bool {
		t, ok := a.failures[c.key()]
		if ok && now.Sub(t) > ttl {
			delete(a.failures, c.key())
			return false
		}
		return ok
	}
	slices.SortStableFunc(out, func(x, y Candidate) int {
		fx, fy := failed(x), failed(y)
		switch {
		case fx == fy:
			return 0
		case fx:
			return 1
		default:
			return -1
		}
	})
	return out, nil
}

// stacks returns the stacks to dial with: those the policy allows, in
// order of preference, that can meet the trust settings.
func (a *Association) stacks() ([]psi.Stack, error) {
	stacks, err := a.selectStacks()
	if err != nil {
		return nil, err
	}
	return a.secureStacks(stacks, false)
}

func (a *Association) selectStacks() ([]psi.Stack, error) {
	if len(a.cfg.Stacks) == 0 {
		return nil, post.Errorf(post.ErrNoCandidates, "no protocol stacks configured")
	}
	cands := make([]policy.Candidate, len(a.cfg.Stacks))
	for i, s := range a.cfg.Stacks {
		cands[i] = policy.Candidate{Name: s.Name(), Features: s.Features()}
	}
	sel, err := a.cfg.Policy.SelectStacks(cands)
	if err != nil {
		return nil, err
	}
	out := make([]psi.Stack, 0, len(sel))
	for _, c := range sel {
		for _, s := range a.cfg.Stacks {
			if s.Name() == c.Name {
				out = append(out, s)
				break
			}
		}
	}
	return out, nil
}

// Stacks returns the stacks the policy allows that can dial under the
// trust settings, in order of preference.
func (a *Association) Stacks() ([]psi.Stack, error) { return a.stacks() }

type attempt struct {
	c   Candidate
	n   int // start order
	t   psi.Transient
	err error
}

// EstablishOptions tune one race.
type EstablishOptions struct {
	// Allow0RTT lets stacks holding resumption state send the first
	// message as 0-RTT data. Set it only when that message is idempotent;
	// a policy prohibiting 0-RTT overrides it. Such a dial returns before
	// its handshake, and so wins the race as it starts (see Race).
	Allow0RTT bool
}

// Establish races the candidates and returns the first transient to
// complete its handshake. Attempts start one attempt delay apart (RFC
// 8305), or at once when the previous one fails. Establish returns as soon
// as one wins; the losers are cancelled and collected in the background,
// any that complete late are closed, and Wait waits for that.
func (a *Association) Establish(ctx context.Context) (psi.Transient, error) {
	return a.EstablishWith(ctx, EstablishOptions{})
}

// EstablishWith is Establish with options.
func (a *Association) EstablishWith(ctx context.Context, opts EstablishOptions) (psi.Transient, error) {
	t, _, err := a.Race(ctx, opts)
	return t, err
}

// Race is EstablishWith that also returns the candidate that won (the
// zero Candidate for a peer-to-peer Remote), for Failed. With
// opts.Allow0RTT, a stack that sends 0-RTT data returns from its dial
// before its handshake, and so wins the race as it starts
// (psi.ZeroRTTReporter); if that handshake then fails, call Failed and
// race again without 0-RTT.
func (a *Association) Race(ctx context.Context, opts EstablishOptions) (psi.Transient, Candidate, error) {
	if a.cfg.Remote.Peer != "" {
		t, err := a.establishP2P(ctx)
		return t, Candidate{}, err
	}
	cands, err := a.Candidates(ctx)
	if err != nil {
		return nil, Candidate{}, err
	}
	delay := a.cfg.Policy.Delay()
	a.log.Debug("race start", "candidates", len(cands), "first", cands[0].String(), "delay", delay)

	var win *attempt
	rctx, cancel := context.WithCancel(ctx)
	results := make(chan attempt, len(cands))
	next, running := 0, 0
	start := func() {
		c, n := cands[next], next
		next++
		running++
		a.log.Debug("race attempt", "n", next, "candidate", c.String())
		cfg := a.TransientConfig(c.Local)
		cfg.Allow0RTT = opts.Allow0RTT && a.cfg.Policy.Disabled()&psi.ZeroRTT == 0
		go func() {
			t, err := c.Stack.Dial(rctx, c.Remote, cfg)
			results <- attempt{c, n, t, err}
		}()
	}
	start()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var errs []error
	authErr := false // an attempt failed authentication
	for win == nil && running > 0 && !authErr {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				win = &r
				break
			}
			a.log.Debug("race attempt failed", "candidate", r.c.String(), "err", r.err)
			errs = append(errs, fmt.Errorf("%s: %w", r.c, r.err))
			// Not once the caller's deadline passed: a stack that sets
			// it on its socket fails before ctx's timer marks it done.
			if ctxend.Err(ctx) == nil {
				a.mu.Lock()
				a.failures[r.c.key()] = time.Now()
				a.mu.Unlock()
			}
			if authFailed(r.err) {
				// Every attempt shares these trust settings and would
				// fail the same way: end the race now.
				a.log.Debug("race ends on an authentication failure", "candidate", r.c.String())
				authErr = true
				continue
			}
			if next < len(cands) {
				start()
				timer.Reset(delay)
			}
		case <-timer.C:
			if next < len(cands) {
				start()
				timer.Reset(delay)
			}
		}
	}
	cancel()
	if running > 0 {
		// RFC 8305: return the winner, or the authentication failure,
		// now. The others are cancelled; those started before the winner
		// were slower than it, so they are remembered as failed. They are
		// collected, and any that completed late closed, in the
		// background (see Wait).
		if win != nil {
			now := time.Now()
			a.mu.Lock()
			for _, c := range cands[:win.n] {
				a.failures[c.key()] = now
			}
			a.mu.Unlock()
		}
		a.bg.add()
		go a.collectLosers(results, running)
	}
	if win == nil {
		err := errors.Join(errs...)
		if ctxErr := ctxend.Err(ctx); ctxErr != nil {
			// A deadline is a timeout; a cancellation is not (post's
			// doc: the context's error alone).
			if errors.Is(ctxErr, context.DeadlineExceeded) {
				ctxErr = fmt.Errorf("%w: %w", post.ErrTimeout, ctxErr)
			}
			err = errors.Join(ctxErr, err)
		} else if hint := a.trustHint(); authErr && hint != nil {
			err = errors.Join(err, hint)
		}
		return nil, Candidate{}, &post.OpError{Op: "initiate", Path: a.cfg.Remote.String(), Err: err}
	}
	w := &Winner{Stack: win.c.Stack.Name(), Remote: win.c.Remote, Local: win.t.Path().Local, At: time.Now(), Attempts: next}
	a.mu.Lock()
	a.winner = w
	delete(a.failures, win.c.key())
	a.mu.Unlock()
	a.log.Info("race won", "stack", w.Stack, "remote", w.Remote, "attempts", next)
	a.ObservePath(win.t.Path())
	return win.t, win.c, nil
}

// Failed records that c, which won a race, failed before its handshake
// completed: like a candidate that failed in a race, it is tried last
// for Config.FailureTTL. The zero Candidate is ignored.
func (a *Association) Failed(c Candidate) {
	if c.Stack == nil {
		return
	}
	a.log.Debug("race winner failed its handshake", "candidate", c.String())
	a.mu.Lock()
	a.failures[c.key()] = time.Now()
	a.mu.Unlock()
}

// collectLosers waits for the n attempts still running after a race was
// won and closes any that completed late.
func (a *Association) collectLosers(results <-chan attempt, n int) {
	defer a.bg.done()
	for ; n > 0; n-- {
		if r := <-results; r.t != nil {
			a.log.Debug("race aborting late winner", "candidate", r.c.String())
			if ab, ok := r.t.(psi.Aborter); ok {
				ab.Abort(errors.New("lost the race"))
			} else {
				r.t.Close()
			}
		}
	}
}

// Wait blocks until the losing attempts of every race won so far have
// returned and been closed, or ctx ends. Establish does not wait for
// them; call Wait before checking that nothing outlives the Association.
func (a *Association) Wait(ctx context.Context) error { return a.bg.wait(ctx) }

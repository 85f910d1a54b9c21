// Package policy holds the Policy Context: which protocol stacks, stack
// features and network interfaces are required, preferred, avoided or
// prohibited, and how a system context merges with an application one.
package policy

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Preference is the strength of a policy rule. The zero value expresses no
// preference.
type Preference int8

// Preferences, from weakest to strongest.
const (
	NoPreference Preference = iota
	Avoid
	Prefer
	Require
	Prohibit
)

func (p Preference) String() string {
	switch p {
	case Avoid:
		return "avoid"
	case Prefer:
		return "prefer"
	case Require:
		return "require"
	case Prohibit:
		return "prohibit"
	}
	return "none"
}

// ParsePreference parses the String form of a Preference.
func ParsePreference(s string) (Preference, error) {
	for p := NoPreference; p <= Prohibit; p++ {
		if p.String() == strings.ToLower(s) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("policy: unknown preference %q", s)
}

// ICEServer is a STUN or TURN server used for rendezvous.
type ICEServer struct {
	URL      string // "stun:host:port" or "turn:host:port"
	Username string
	Password string
}

// Context is a Policy Context. Keys of Stacks are stack names ("fsp",
// "quic", "tcp"); keys of Features are psi feature names ("0-rtt",
// "datagrams", ...); keys of Interfaces are interface names. The zero value
// allows everything and prefers nothing.
type Context struct {
	Stacks     map[string]Preference
	Features   map[string]Preference
	Interfaces map[string]Preference

	// AttemptDelay is the happy-eyeballs delay between connection
	// attempts; zero means 250 ms, and values below 10 ms are raised to it.
	AttemptDelay time.Duration
	// ICEServers are STUN and TURN servers for peer-to-peer rendezvous.
	ICEServers []ICEServer
	// AllowMilk lets a Carrier fork milk-like clones (Carrier.ForkClass
	// with psi.Milk), where newer data may supersede older. Datagrams
	// need no opt-in: an Unreliable message with a Lifetime goes as one
	// where the stack has them (QUIC) unless the datagrams feature is
	// prohibited.
	AllowMilk bool
}

func set(m *map[string]Preference, k string, p Preference) {
	if *m == nil {
		*m = make(map[string]Preference)
	}
	(*m)[k] = p
}

// Stack sets the preference for a stack and returns c for chaining.
func (c *Context) Stack(name string, p Preference) *Context {
	set(&c.Stacks, name, p)
	return c
}

// Feature sets the preference for a stack feature and returns c.
func (c *Context) Feature(f psi.Features, p Preference) *Context {
	set(&c.Features, f.String(), p)
	return c
}

// Interface sets the preference for a network interface and returns c.
func (c *Context) Interface(name string, p Preference) *Context {
	set(&c.Interfaces, name, p)
	return c
}

// Delay returns the effective attempt delay.
func (c *Context) Delay() time.Duration {
	switch d := c.AttemptDelay; {
	case d == 0:
		return 250 * time.Millisecond
	case d < 10*time.Millisecond:
		return 10 * time.Millisecond
	default:
		return d
	}
}

// Clone returns a deep copy of c.
func (c Context) Clone() Context {
	c.Stacks = maps.Clone(c.Stacks)
	c.Features = maps.Clone(c.Features)
	c.Interfaces = maps.Clone(c.Interfaces)
	c.ICEServers = slices.Clone(c.ICEServers)
	return c
}

// Merge combines a system context with an application one. Prohibit and
// Require are applied first, then Prefer, then Avoid: a rule of a stronger
// class wins over a weaker one. A key that one side requires and the other
// prohibits is a conflict, reported as an error wrapping
// post.ErrPolicyConflict. Scalar settings of app override system ones.
func Merge(system, app Context) (Context, error) {
	out := system.Clone()
	var errs []string
	mergeMap := func(kind string, dst *map[string]Preference, src map[string]Preference) {
		for _, k := range slices.Sorted(maps.Keys(src)) {
			a, s := src[k], (*dst)[k]
			switch {
			case a == s || a == NoPreference:
			case (a == Require && s == Prohibit) || (a == Prohibit && s == Require):
				errs = append(errs, fmt.Sprintf("%s %q is both required and prohibited", kind, k))
			case a > s:
				set(dst, k, a)
			}
		}
	}
	mergeMap("stack", &out.Stacks, app.Stacks)
	mergeMap("feature", &out.Features, app.Features)
	mergeMap("interface", &out.Interfaces, app.Interfaces)
	if app.AttemptDelay != 0 {
		out.AttemptDelay = app.AttemptDelay
	}
	if len(app.ICEServers) > 0 {
		out.ICEServers = slices.Clone(app.ICEServers)
	}
	out.AllowMilk = out.AllowMilk || app.AllowMilk
	if err := out.Validate(); err != nil {
		errs = append(errs, strings.TrimPrefix(err.Error(), post.ErrPolicyConflict.Error()+": "))
	}
	if len(errs) > 0 {
		return Context{}, post.Errorf(post.ErrPolicyConflict, "%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// Validate reports contradictions within c: more than one required stack,
// or an unknown feature name.
func (c *Context) Validate() error {
	var req []string
	for name, p := range c.Stacks {
		if p == Require {
			req = append(req, name)
		}
	}
	if len(req) > 1 {
		slices.Sort(req)
		return post.Errorf(post.ErrPolicyConflict, "stacks %s are all required, but a transient uses one", strings.Join(req, ", "))
	}
	for name := range c.Features {
		if _, ok := psi.ParseFeature(name); !ok {
			return post.Errorf(post.ErrPolicyConflict, "unknown feature %q", name)
		}
	}
	return nil
}

// optional features are turned off rather than ruling a stack out when
// prohibited.
const optional = psi.ZeroRTT | psi.Datagrams | psi.MilkClones | psi.Fork | psi.Mobility | psi.Multipath

// Features returns the features the policy requires and the optional ones
// it prohibits.
func (c *Context) featureSets() (required, prohibited psi.Features) {
	for name, p := range c.Features {
		f, ok := psi.ParseFeature(name)
		if !ok {
			continue
		}
		switch p {
		case Require:
			required |= f
		case Prohibit:
			prohibited |= f
		}
	}
	return
}

// Disabled returns the optional features a stack must not use.
func (c *Context) Disabled() psi.Features {
	_, p := c.featureSets()
	return p & optional
}

// Candidate is a stack offered for selection.
type Candidate struct {
	Name     string
	Features psi.Features
}

// SelectStacks filters and orders stacks. Stacks that are prohibited, that
// lack a required feature, or that inherently have a prohibited feature are
// dropped; the rest are ordered by score (require, prefer and avoid on the
// stack, plus prefer and avoid on its features), keeping the input order
// among equals. An empty result is an error wrapping post.ErrNoCandidates.
func (c *Context) SelectStacks(stacks []Candidate) ([]Candidate, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	required, prohibited := c.featureSets()
	type scored struct {
		Candidate
		score int
		idx   int
	}
	var out []scored
	var why []string
	for i, s := range stacks {
		p := c.Stacks[s.Name]
		switch {
		case p == Prohibit:
			why = append(why, s.Name+" prohibited")
			continue
		case !s.Features.Has(required):
			why = append(why, fmt.Sprintf("%s lacks %s", s.Name, required&^s.Features))
			continue
		case s.Features.Has(psi.Plaintext) && !c.AllowsPlaintext(s.Name):
			why = append(why, s.Name+" is unencrypted and the policy does not opt in (avoid or prohibit the encrypted feature, or require the stack)")
			continue
		case s.Features&prohibited&^optional != 0:
			why = append(why, fmt.Sprintf("%s has prohibited %s", s.Name, s.Features&prohibited&^optional))
			continue
		}
		sc := 0
		switch p {
		case Require:
			sc += 1000
		case Prefer:
			sc += 100
		case Avoid:
			sc -= 100
		}
		for name, fp := range c.Features {
			f, _ := psi.ParseFeature(name)
			if s.Features.Has(f) {
				switch fp {
				case Prefer:
					sc += 10
				case Avoid:
					sc -= 10
				}
			}
		}
		out = append(out, scored{s, sc, i})
	}
	// A required stack excludes the others, and must itself survive.
	for name, p := range c.Stacks {
		if p == Require && !slices.ContainsFunc(out, func(o scored) bool { return o.Name == name }) {
			return nil, post.Errorf(post.ErrNoCandidates, "required stack %s is unavailable (%s)", name, strings.Join(why, "; "))
		}
	}
	for _, s := range out {
		if s.score >= 900 {
			out = slices.DeleteFunc(out, func(o scored) bool { return o.score < 900 })
			break
		}
	}
	if len(out) == 0 {
		return nil, post.Errorf(post.ErrNoCandidates, "policy leaves no stack (%s)", strings.Join(why, "; "))
	}
	slices.SortStableFunc(out, func(a, b scored) int { return cmp.Compare(b.score, a.score) })
	res := make([]Candidate, len(out))
	for i, s := range out {
		res[i] = s.Candidate
	}
	return res, nil
}

// AllowsPlaintext reports whether the policy opts in to the named stack
// sending in the clear (a stack with the psi.Plaintext feature, such as
// psi/raw's plain TCP). Only an explicit rule does: the "encrypted"
// feature avoided (allowed unencrypted) or prohibited (required
// unencrypted), or the stack itself required by name.
func (c *Context) AllowsPlaintext(stack string) bool {
	if c.Stacks[stack] == Require {
		return true
	}
	p := c.Features[psi.Encrypted.String()]
	return p == Avoid || p == Prohibit
}

// AllowInterface reports whether an interface may be used, and its order
// weight (higher first).
func (c *Context) AllowInterface(name string) (ok bool, weight int) {
	anyRequired := false
	for _, p := range c.Interfaces {
		if p == Require {
			anyRequired = true
		}
	}
	switch c.Interfaces[name] {
	case Prohibit:
		return false, 0
	case Require:
		return true, 2
	case Prefer:
		return !anyRequired, 1
	case Avoid:
		return !anyRequired, -1
	}
	return !anyRequired, 0
}

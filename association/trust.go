package association

import (
	"errors"
	"fmt"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// secureStacks keeps the stacks that can give every guarantee the trust
// settings ask for. A stack that cannot is left out with a logged reason
// rather than raced with weaker security (RFC 9621, section 4.2); if none
// is left, the reasons are the error. server says whether the stacks will
// listen.
func (a *Association) secureStacks(stacks []psi.Stack, server bool) ([]psi.Stack, error) {
	if err := a.cfg.Security.Check(); err != nil {
		return nil, err
	}
	out := stacks[:0:0]
	var why []error
	for _, s := range stacks {
		if err := psi.CheckStackSecurity(s, &a.cfg.Security, server); err != nil {
			a.log.Warn("stack left out: it cannot meet the trust settings", "stack", s.Name(), "reason", err)
			why = append(why, fmt.Errorf("%s: %w", s.Name(), err))
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 && len(why) > 0 {
		return nil, errors.Join(append([]error{post.Errorf(post.ErrNoCandidates, "no stack meets the trust settings")}, why...)...)
	}
	return out, nil
}

// ListenStacks returns the stacks the policy allows that can listen under
// the trust settings, in order of preference.
func (a *Association) ListenStacks() ([]psi.Stack, error) {
	stacks, err := a.selectStacks()
	if err != nil {
		return nil, err
	}
	return a.secureStacks(stacks, true)
}

// authFailed reports whether err means the peer or this end failed
// authentication: a failure every attempt sharing the trust settings
// would meet too.
func authFailed(err error) bool { return errors.Is(err, post.ErrAuthentication) }

// trustHint explains a failed authentication when the trust settings
// name no peer at all, so the caller learns what to configure.
func (a *Association) trustHint() error {
	s := &a.cfg.Security
	if s.RootCAs != nil || len(s.PinnedKeys) > 0 || len(s.PSK) > 0 || s.InsecureSkipVerify {
		return nil
	}
	return errors.New("no trust configured, so the peer was checked against the system roots: " +
		"set Security.RootCAs, Security.PinnedKeys or Security.PSK to say which peer to trust")
}

package policy_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// A stack with psi.Plaintext is chosen only on an explicit opt-in.
func TestPlaintextNeedsOptIn(t *testing.T) {
	cands := []policy.Candidate{
		{"raw-tcp", psi.Reliable | psi.Ordered | psi.Plaintext},
		{"tcp", psi.Reliable | psi.Ordered | psi.Encrypted},
	}
	for _, c := range []struct {
		name string
		pol  *policy.Context
		want []string
	}{
		{"no rule", new(policy.Context), []string{"tcp"}},
		{"stack preferred", new(policy.Context).Stack("raw-tcp", policy.Prefer), []string{"tcp"}},
		{"encrypted required", new(policy.Context).Feature(psi.Encrypted, policy.Require), []string{"tcp"}},
		{"encrypted avoided", new(policy.Context).Feature(psi.Encrypted, policy.Avoid), []string{"raw-tcp", "tcp"}},
		{"encrypted prohibited", new(policy.Context).Feature(psi.Encrypted, policy.Prohibit), []string{"raw-tcp"}},
		{"stack required", new(policy.Context).Stack("raw-tcp", policy.Require), []string{"raw-tcp"}},
		{"plaintext prohibited", new(policy.Context).Feature(psi.Encrypted, policy.Avoid).Feature(psi.Plaintext, policy.Prohibit), []string{"tcp"}},
	} {
		sel, err := c.pol.SelectStacks(cands)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := names(sel); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
	if _, err := new(policy.Context).SelectStacks(cands[:1]); !errors.Is(err, post.ErrNoCandidates) {
		t.Errorf("only plain TCP, no opt-in: %v", err)
	}
}

package policy_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

var stacks = []policy.Candidate{
	{"fsp", psi.Reliable | psi.Ordered | psi.MessageBoundaries | psi.Fork | psi.ZeroRTT | psi.Encrypted | psi.Mobility | psi.MilkClones},
	{"quic", psi.Reliable | psi.Ordered | psi.Fork | psi.ZeroRTT | psi.Datagrams | psi.Encrypted},
	{"tcp", psi.Reliable | psi.Ordered | psi.Fork | psi.Encrypted},
}

func names(cs []policy.Candidate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestSelectStacks(t *testing.T) {
	tests := []struct {
		name string
		ctx  policy.Context
		want string
	}{
		{"zero value keeps order", policy.Context{}, "[fsp quic tcp]"},
		{"prohibit", *new(policy.Context).Stack("fsp", policy.Prohibit), "[quic tcp]"},
		{"require", *new(policy.Context).Stack("tcp", policy.Require), "[tcp]"},
		{"prefer", *new(policy.Context).Stack("tcp", policy.Prefer), "[tcp fsp quic]"},
		{"avoid", *new(policy.Context).Stack("fsp", policy.Avoid), "[quic tcp fsp]"},
		{"require feature", *new(policy.Context).Feature(psi.Datagrams, policy.Require), "[quic]"},
		{"prefer feature", *new(policy.Context).Feature(psi.Datagrams, policy.Prefer), "[quic fsp tcp]"},
		{"prohibit optional feature keeps stacks", *new(policy.Context).Feature(psi.ZeroRTT, policy.Prohibit), "[fsp quic tcp]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.ctx.SelectStacks(stacks)
			if err != nil {
				t.Fatal(err)
			}
			if s := fmt.Sprint(names(got)); s != tt.want {
				t.Fatalf("got %s, want %s", s, tt.want)
			}
		})
	}
}

func TestSelectNothingLeft(t *testing.T) {
	c := new(policy.Context).Stack("tcp", policy.Require).Feature(psi.Datagrams, policy.Require)
	_, err := c.SelectStacks(stacks)
	if !errors.Is(err, post.ErrNoCandidates) {
		t.Fatalf("got %v, want ErrNoCandidates", err)
	}
}

func TestMergeOrder(t *testing.T) {
	sys := new(policy.Context).Stack("quic", policy.Avoid).Stack("tcp", policy.Prohibit).Interface("wlan0", policy.Avoid)
	app := new(policy.Context).Stack("quic", policy.Prefer).Stack("tcp", policy.Avoid).Interface("eth0", policy.Prefer)
	app.AttemptDelay = 50 * time.Millisecond
	m, err := policy.Merge(*sys, *app)
	if err != nil {
		t.Fatal(err)
	}
	if m.Stacks["quic"] != policy.Prefer {
		t.Errorf("prefer should beat avoid, got %v", m.Stacks["quic"])
	}
	if m.Stacks["tcp"] != policy.Prohibit {
		t.Errorf("prohibit should beat avoid, got %v", m.Stacks["tcp"])
	}
	if m.Interfaces["eth0"] != policy.Prefer || m.Interfaces["wlan0"] != policy.Avoid {
		t.Errorf("interfaces: %v", m.Interfaces)
	}
	if m.Delay() != 50*time.Millisecond {
		t.Errorf("delay %v", m.Delay())
	}
	// The system context is not modified.
	if sys.Stacks["quic"] != policy.Avoid {
		t.Error("Merge modified its input")
	}
}

func TestMergeConflict(t *testing.T) {
	sys := new(policy.Context).Stack("fsp", policy.Prohibit)
	app := new(policy.Context).Stack("fsp", policy.Require)
	if _, err := policy.Merge(*sys, *app); !errors.Is(err, post.ErrPolicyConflict) {
		t.Fatalf("got %v, want ErrPolicyConflict", err)
	}
	two := new(policy.Context).Stack("fsp", policy.Require)
	if _, err := policy.Merge(*two, *new(policy.Context).Stack("tcp", policy.Require)); !errors.Is(err, post.ErrPolicyConflict) {
		t.Fatalf("two required stacks: got %v", err)
	}
	bad := policy.Context{Features: map[string]policy.Preference{"teleport": policy.Require}}
	if _, err := policy.Merge(policy.Context{}, bad); !errors.Is(err, post.ErrPolicyConflict) {
		t.Fatalf("unknown feature: got %v", err)
	}
}

func TestDelayFloor(t *testing.T) {
	c := policy.Context{AttemptDelay: time.Millisecond}
	if c.Delay() != 10*time.Millisecond {
		t.Fatalf("delay %v", c.Delay())
	}
	if (&policy.Context{}).Delay() != 250*time.Millisecond {
		t.Fatal("default delay")
	}
}

func TestInterfaces(t *testing.T) {
	c := new(policy.Context).Interface("eth0", policy.Require).Interface("wlan0", policy.Prohibit)
	if ok, _ := c.AllowInterface("eth1"); ok {
		t.Error("eth1 allowed although eth0 is required")
	}
	if ok, _ := c.AllowInterface("eth0"); !ok {
		t.Error("eth0 not allowed")
	}
	if ok, _ := c.AllowInterface("wlan0"); ok {
		t.Error("wlan0 allowed")
	}
}

func ExampleMerge() {
	system := new(policy.Context).Stack("quic", policy.Prohibit)
	app := new(policy.Context).Stack("tcp", policy.Prefer)
	merged, err := policy.Merge(*system, *app)
	if err != nil {
		fmt.Println(err)
		return
	}
	sel, _ := merged.SelectStacks([]policy.Candidate{{Name: "fsp"}, {Name: "quic"}, {Name: "tcp"}})
	for _, s := range sel {
		fmt.Println(s.Name)
	}
	// Output:
	// tcp
	// fsp
}

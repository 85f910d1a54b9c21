package carrier

import (
	"context"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
	"github.com/postsockets/postsockets/psi/raw"
)

// URLStacks returns the stacks that reach u: for fsp:// nil (the
// configured or default stacks); for tcp://, tls:// and https://, and
// quic:// the matching psi/raw stack with u's ALPN, framing messages with
// f (nil means framer.LengthPrefix).
func URLStacks(u post.RemoteURL, f framer.Framer) []psi.Stack {
	switch u.Scheme {
	case "tcp":
		return []psi.Stack{&raw.TCP{Framer: f}}
	case "tls", "https":
		return []psi.Stack{&raw.TLS{ALPN: u.ALPN, Framer: f}}
	case "quic":
		return []psi.Stack{&raw.QUIC{ALPN: u.ALPN, Framer: f}}
	}
	return nil
}

// InitiateURL makes a Carrier to the Remote a URL names (see
// post.ParseRemoteURL) over the stack its scheme names, framing messages
// with f. cfg's Policy still applies: tcp:// is plain TCP, which the
// policy must opt in to (policy.Context.AllowsPlaintext), or InitiateURL
// fails with an error wrapping post.ErrNoCandidates.
func InitiateURL(ctx context.Context, rawURL string, f framer.Framer, cfg *Config) (*Carrier, error) {
	u, err := post.ParseRemoteURL(rawURL)
	if err != nil {
		return nil, err
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if st := URLStacks(u, f); st != nil {
		if c.Association != nil {
			return nil, post.Errorf(post.ErrInvalid, "InitiateURL %s: a shared Association fixes the stacks; leave Config.Association nil", u.Scheme)
		}
		c.Stacks = st
	}
	return Initiate(ctx, u.Remote, &c)
}

// Package rendezvous lets two peers that know each other's peer IDs find
// a direct path: each side registers "I am A and I want to talk to B" with
// its ICE credentials and candidates at a rendezvous server, which hands A's
// offer to B only once B has asked for A in turn (mutual consent). The peers
// then run ICE connectivity checks and end up with a datagram path, direct
// through NATs where possible and relayed through TURN otherwise.
//
// Peers are named by PeerIDs, digests of their public keys. The server
// accepts a registration, and hands out an answer, only to a client that
// signs its request with the key of the ID it registers as, over a fresh
// server nonce (see HeaderNonce). It bounds what each source address and
// each key may hold, and drops a registration as soon as its client goes
// away. The server still sees the offers, so the peers authenticate each
// other end to end as well: Session.Security pins the peer's key for the
// connection run over the path.
//
// # Protocol
//
// A peer POSTs to /exchange a JSON body
//
//	{"self": "<its peer ID>", "peer": "<the other's peer ID>",
//	 "offer": {"ufrag": "...", "pwd": "...", "candidates": ["candidate:..."],
//	           "stacks": ["fsp", "quic"]}}
//
// signed as HeaderNonce describes, and the server holds the request until
// the peer has posted the mirror image, or for at most Config.MaxWait.
// Every answer carries a fresh nonce. Answers:
//
//	200 {"offer": {...}}  the peer's offer; "controlling" says whether the
//	                      peer is the ICE-controlling side
//	204                   not yet: post again (the registration is kept
//	                      for Config.EntryTTL)
//	400                   malformed request; 413 too large
//	401                   unsigned, stale nonce or bad signature: sign
//	                      over the nonce in this answer
//	403                   signed by another key than self's, or refused
//	                      by Config.Authorize
//	409                   a newer poll for the same names displaced this one
//	429                   this client is over its limits: retry later
//	503                   server full or closing: retry later
//
// The side whose ID sorts first is ICE-controlling and dials; the other
// listens. "stacks" lists the protocol stacks a peer can run over the
// path, in its order of preference (absent means "fsp" alone); both sides
// run the controlling side's first choice that the other offered too.
package rendezvous

import (
	"slices"
	"strings"

	"github.com/postsockets/postsockets/internal/ice"
	"github.com/postsockets/postsockets/post"
)

// Offer is one peer's ICE session description.
type Offer struct {
	Ufrag      string   `json:"ufrag"`
	Pwd        string   `json:"pwd"`
	Candidates []string `json:"candidates"`
	// Controlling is set by the server in the offer it returns: whether
	// the peer that made the offer is the ICE-controlling side. It is
	// ignored in requests.
	Controlling bool `json:"controlling,omitempty"`
	// Stacks names the protocol stacks the peer can run over the path,
	// in its order of preference; empty means "fsp" alone, as peers
	// offered before they named stacks.
	Stacks []string `json:"stacks,omitempty"`
}

// MaxStacks bounds the stacks an offer names; MaxStackName bounds a name.
const (
	MaxStacks    = 8
	MaxStackName = 16
)

// defaultStacks is what an offer that names no stacks stands for.
var defaultStacks = []string{"fsp"}

// validStacks checks the stack names of an offer.
func (o *Offer) validStacks() error {
	if len(o.Stacks) > MaxStacks {
		return post.Errorf(post.ErrMalformed, "rendezvous: %d stacks offered, limit %d", len(o.Stacks), MaxStacks)
	}
	for _, name := range o.Stacks {
		if name == "" || len(name) > MaxStackName || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789+-_") != "" {
			return post.Errorf(post.ErrMalformed, "rendezvous: bad stack name %q", name)
		}
	}
	return nil
}

// AgreeStack returns the stack both sides run over the path, given
// whether this side is controlling, the stacks it offered and those the
// peer offered (empty: "fsp"): the controlling side's first choice that
// the other side offered too. Both sides reach the same answer. Errors
// wrap post.ErrNoCandidates.
func AgreeStack(controlling bool, mine, theirs []string) (string, error) {
	if len(mine) == 0 {
		mine = defaultStacks
	}
	if len(theirs) == 0 {
		theirs = defaultStacks
	}
	first, other := mine, theirs
	if !controlling {
		first, other = theirs, mine
	}
	for _, name := range first {
		if slices.Contains(other, name) {
			return name, nil
		}
	}
	return "", post.Errorf(post.ErrNoCandidates, "p2p: this side runs %s over the path, the peer %s: none in common",
		strings.Join(mine, ","), strings.Join(theirs, ","))
}

// Controlling reports whether self is the ICE-controlling side (and so the
// dialling side of any protocol run over the path) when it talks to peer:
// the side whose ID sorts first.
func Controlling(self, peer PeerID) bool { return self < peer }

// Validate checks an offer received from the network.
func (o *Offer) Validate() error {
	if !ice.ValidCredentials(o.Ufrag, o.Pwd) {
		return post.Errorf(post.ErrMalformed, "rendezvous: bad ICE credentials")
	}
	if len(o.Candidates) == 0 {
		return post.Errorf(post.ErrMalformed, "rendezvous: no candidates")
	}
	if len(o.Candidates) > ice.MaxCandidates {
		return post.Errorf(post.ErrMalformed, "rendezvous: %d candidates, limit %d", len(o.Candidates), ice.MaxCandidates)
	}
	for _, c := range o.Candidates {
		if _, err := ice.ParseCandidate(c); err != nil && !isNotSupported(err) {
			return err
		}
	}
	return o.validStacks()
}

// request is the body of a POST to /exchange.
type request struct {
	Self  PeerID `json:"self"`
	Peer  PeerID `json:"peer"`
	Offer Offer  `json:"offer"`
}

// response is the body of a 200 answer.
type response struct {
	Offer Offer `json:"offer"`
}

// errorBody is the body of an error answer.
type errorBody struct {
	Error string `json:"error"`
}

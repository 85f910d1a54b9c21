// Package rendezvous lets two peers that know each other's names find a
// direct path: each side registers "I am A and I want to talk to B" with
// its ICE credentials and candidates at a rendezvous server, which hands A's
// offer to B only once B has asked for A in turn (mutual consent). The peers
// then run ICE connectivity checks and end up with a datagram path, direct
// through NATs where possible and relayed through TURN otherwise.
//
// The server speaks JSON over HTTP with long polling. It does not
// authenticate peer names: anyone may claim any name, so the peers must
// authenticate each other end to end (for example with FSP and a pre-shared
// key or pinned keys), and deployments that need more can check requests
// in Server.Authorize.
//
// # Protocol
//
// A peer POSTs to /exchange a JSON body
//
//	{"self": "alice", "peer": "bob",
//	 "offer": {"ufrag": "...", "pwd": "...", "candidates": ["candidate:..."]}}
//
// and the server holds the request until bob has posted the mirror image
// (self "bob", peer "alice"), or for at most Server.MaxWait. Answers:
//
//	200 {"offer": {...}}  the peer's offer; "controlling" says whether the
//	                      peer is the ICE-controlling side
//	204                   not yet: post again (the registration is kept
//	                      for Server.EntryTTL)
//	400                   malformed request; 413 too large
//	403                   refused by Server.Authorize
//	409                   a newer poll for the same names displaced this one
//	503                   server full or closing: retry later
//
// Names are 1 to 128 bytes of letters, digits and "-._@:+". The side whose
// name sorts first is ICE-controlling and dials; the other listens.
package rendezvous

import (
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
}

// Controlling reports whether self is the ICE-controlling side (and so the
// dialling side of any protocol run over the path) when it talks to peer:
// the side whose name sorts first.
func Controlling(self, peer string) bool { return self < peer }

// MaxIDLength bounds a peer name.
const MaxIDLength = 128

// ValidID reports whether id is an acceptable peer name: 1 to 128 bytes of
// letters, digits and "-._@:+".
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._@:+", c) >= 0) {
			return false
		}
	}
	return true
}

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
	return nil
}

// request is the body of a POST to /exchange.
type request struct {
	Self  string `json:"self"`
	Peer  string `json:"peer"`
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

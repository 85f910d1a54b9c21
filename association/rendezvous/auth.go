package rendezvous

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"

	"github.com/postsockets/postsockets/post"
)

// Request authentication. Every response carries a fresh server nonce in
// HeaderNonce. A client signs each request with its Ed25519 key over the
// last nonce it received and the request body, and sends the nonce, its
// public key and the signature in the three headers. The server checks
// that the nonce is its own, at most NonceTTL old and unused, that the
// signature verifies, and that the body's self is the key's peer ID. A
// request without them gets 401 with a nonce to sign.
const (
	HeaderNonce     = "Postsockets-Nonce"
	HeaderKey       = "Postsockets-Key"
	HeaderSignature = "Postsockets-Signature"
)

// signContext separates rendezvous signatures from any other use of a
// peer key.
const signContext = "postsockets rendezvous request v1\x00"

var b64 = base64.RawURLEncoding

// signedData is what a request signature covers.
func signedData(nonce string, body []byte) []byte {
	d := make([]byte, 0, len(signContext)+len(nonce)+1+len(body))
	d = append(d, signContext...)
	d = append(d, nonce...)
	d = append(d, 0)
	return append(d, body...)
}

// signRequest returns the key and signature headers' values.
func signRequest(k *Key, nonce string, body []byte) (key, sig string) {
	pub := k.Private.Public().(ed25519.PublicKey)
	return b64.EncodeToString(pub), b64.EncodeToString(ed25519.Sign(k.Private, signedData(nonce, body)))
}

// verifyRequest checks a request's key and signature headers and returns
// the signer's public key. Errors wrap post.ErrAuthentication or
// post.ErrMalformed.
func verifyRequest(nonce, key, sig string, body []byte) (ed25519.PublicKey, error) {
	pub, err := b64.DecodeString(key)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: bad %s header", HeaderKey)
	}
	s, err := b64.DecodeString(sig)
	if err != nil || len(s) != ed25519.SignatureSize {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: bad %s header", HeaderSignature)
	}
	if !ed25519.Verify(pub, signedData(nonce, body), s) {
		return nil, post.Errorf(post.ErrAuthentication, "rendezvous: bad request signature")
	}
	return pub, nil
}

// nonceLen is a nonce's size before encoding: an 8-byte Unix time in
// nanoseconds, 8 random bytes and a 16-byte MAC over both.
const nonceLen = 32

// nonces mints and checks stateless server nonces, and remembers the used
// ones for NonceTTL in two generations. When max are remembered it starts
// a new generation early and forgets the oldest, refusing from then on
// the nonces minted before the ones it still remembers: a flood costs
// clients a fresh nonce, never a replay.
type nonces struct {
	secret    [32]byte
	ttl       time.Duration
	max       int
	cur, prev map[[nonceLen]byte]struct{}
	rotated   time.Time
	floor     time.Time // nonces minted before are refused
}

func (n *nonces) mac(b []byte) []byte {
	m := hmac.New(sha256.New, n.secret[:])
	m.Write(b[:16])
	return m.Sum(nil)[:16]
}

// mint returns a new nonce; random supplies 8 random bytes.
func (n *nonces) mint(now time.Time, random [8]byte) string {
	var b [nonceLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	copy(b[8:16], random[:])
	copy(b[16:], n.mac(b[:]))
	return b64.EncodeToString(b[:])
}

// check verifies that s is a nonce this server minted at most ttl ago
// that has not been used, without recording it.
func (n *nonces) check(s string, now time.Time) ([nonceLen]byte, error) {
	var b [nonceLen]byte
	if len(s) != b64.EncodedLen(nonceLen) {
		return b, post.Errorf(post.ErrAuthentication, "rendezvous: bad nonce")
	}
	if _, err := b64.Decode(b[:], []byte(s)); err != nil || !hmac.Equal(b[16:], n.mac(b[:])) {
		return b, post.Errorf(post.ErrAuthentication, "rendezvous: bad nonce")
	}
	t := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	if age := now.Sub(t); age > n.ttl || age < -time.Second || !n.floor.IsZero() && !t.After(n.floor) {
		return b, post.Errorf(post.ErrAuthentication, "rendezvous: nonce expired")
	}
	n.rotate(now)
	if _, ok := n.cur[b]; ok {
		return b, post.Errorf(post.ErrAuthentication, "rendezvous: nonce already used")
	}
	if _, ok := n.prev[b]; ok {
		return b, post.Errorf(post.ErrAuthentication, "rendezvous: nonce already used")
	}
	return b, nil
}

// use records a checked nonce as used.
func (n *nonces) use(b [nonceLen]byte, now time.Time) {
	if n.max > 0 && n.used() >= n.max {
		// Every nonce in prev was minted before cur began.
		n.floor = n.rotated
		n.prev, n.cur, n.rotated = n.cur, make(map[[nonceLen]byte]struct{}), now
	}
	n.cur[b] = struct{}{}
}

// used returns how many nonces are remembered.
func (n *nonces) used() int { return len(n.cur) + len(n.prev) }

// rotate starts a new generation every ttl: a nonce older than ttl is
// refused by its timestamp, so two generations remember every nonce that
// could still be replayed.
func (n *nonces) rotate(now time.Time) {
	if n.cur == nil {
		n.cur, n.prev, n.rotated = make(map[[nonceLen]byte]struct{}), make(map[[nonceLen]byte]struct{}), now
	}
	if d := now.Sub(n.rotated); d >= n.ttl {
		// A nonce used in a generation older than that has expired.
		n.prev = n.cur
		if d >= 2*n.ttl {
			n.prev = make(map[[nonceLen]byte]struct{})
		}
		n.cur, n.rotated = make(map[[nonceLen]byte]struct{}), now
	}
}

package fsp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"time"

	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Resumption tickets (see doc.go, "Resumption"). A listener seals each
// ticket under a ticket key of its own that rotates every ticketLifetime
// (the previous key still opens), so it keeps no state per client.
const (
	ticketLifetime = time.Hour
	ticketVersion  = 2
	ticketNonceLen = 16
	// ticketFixed is the plaintext before the client chain: version,
	// issue time (Unix ms), smoothed RTT (µs), resumption secret, server
	// identity digest, chain count.
	ticketFixed = 1 + 8 + 4 + fcrypto.SecretLen + sha256.Size + 1
	// ticketSealing is what sealing adds: key ID, GCM nonce and tag.
	ticketSealing = 4 + 12 + fcrypto.TagLen
	// maxTicket bounds a sealed ticket so that RESTORE fits
	// BaseDatagramSize: a client chain too long for that gets no ticket.
	maxTicket = BaseDatagramSize - restoreOverhead
	// restoreOverhead is RESTORE without its ticket: header, extensions
	// (ephemeral key, CONNECT_PARAM), nonce, ticket age and length, 0-RTT
	// message length, and tag.
	restoreOverhead = wire.HeaderLen + 4 + fcrypto.PublicLen + 28 + fcrypto.NonceLen + 6 + 2 + fcrypto.TagLen
)

var errTicket = errors.New("fsp: bad ticket")

// ticket is what a sealed ticket holds.
type ticket struct {
	issued time.Time
	rtt    time.Duration // the listener's estimate when it issued the ticket; 0 if none
	secret []byte        // resumption secret
	server [32]byte      // digest of the issuing listener's identity
	chain  [][]byte      // the client's verified chain, DER, leaf first (may be empty)
}

func (tk *ticket) append(b []byte) []byte {
	b = append(b, ticketVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(tk.issued.UnixMilli()))
	b = binary.BigEndian.AppendUint32(b, uint32(min(max(tk.rtt.Microseconds(), 0), math.MaxUint32)))
	b = append(b, tk.secret...)
	b = append(b, tk.server[:]...)
	b = append(b, byte(len(tk.chain)))
	for _, c := range tk.chain {
		b = binary.BigEndian.AppendUint16(b, uint16(len(c)))
		b = append(b, c...)
	}
	return b
}

// parseTicket decodes an opened ticket. It never panics.
func parseTicket(b []byte) (*ticket, error) {
	if len(b) < ticketFixed || b[0] != ticketVersion || int(b[ticketFixed-1]) > wire.MaxChain {
		return nil, errTicket
	}
	tk := &ticket{
		issued: time.UnixMilli(int64(binary.BigEndian.Uint64(b[1:]))),
		rtt:    time.Duration(binary.BigEndian.Uint32(b[9:])) * time.Microsecond,
	}
	p := b[13:]
	tk.secret = append([]byte(nil), p[:fcrypto.SecretLen]...)
	p = p[fcrypto.SecretLen:]
	copy(tk.server[:], p)
	n := int(p[sha256.Size])
	p = p[sha256.Size+1:]
	for range n {
		if len(p) < 2 {
			return nil, errTicket
		}
		l := int(binary.BigEndian.Uint16(p))
		if l == 0 || len(p) < 2+l {
			return nil, errTicket
		}
		tk.chain = append(tk.chain, append([]byte(nil), p[2:2+l]...))
		p = p[2+l:]
	}
	if len(p) != 0 {
		return nil, errTicket
	}
	return tk, nil
}

// ticketKeys seals and opens a listener's tickets. The key rotates every
// ticketLifetime; tickets under the previous key still open, so a ticket
// lives at most twice that (and its issue time bounds it to one).
type ticketKeys struct {
	mu      sync.Mutex
	cur     ticketKey
	prev    ticketKey
	rotated time.Time
}

type ticketKey struct {
	id   uint32
	aead cipher.AEAD
}

func newTicketKey(id uint32) ticketKey {
	var k [16]byte
	rand.Read(k[:])
	blk, _ := aes.NewCipher(k[:])
	a, _ := cipher.NewGCM(blk)
	return ticketKey{id, a}
}

func (tk *ticketKeys) keys(now time.Time) (cur, prev ticketKey) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.cur.aead == nil {
		var b [4]byte
		rand.Read(b[:])
		tk.cur, tk.rotated = newTicketKey(binary.BigEndian.Uint32(b[:])), now
	}
	if now.Sub(tk.rotated) >= ticketLifetime {
		tk.prev, tk.cur, tk.rotated = tk.cur, newTicketKey(tk.cur.id+1), now
	}
	return tk.cur, tk.prev
}

// seal returns the sealed ticket: key ID, nonce, ciphertext.
func (tk *ticketKeys) seal(t *ticket, now time.Time) []byte {
	k, _ := tk.keys(now)
	b := binary.BigEndian.AppendUint32(nil, k.id)
	var nonce [12]byte
	rand.Read(nonce[:])
	b = append(b, nonce[:]...)
	return k.aead.Seal(b, nonce[:], t.append(nil), b[:4])
}

// open authenticates and decodes a sealed ticket; it fails for tickets
// of another listener, of a key rotated out, or expired.
func (tk *ticketKeys) open(b []byte, now time.Time) (*ticket, error) {
	if len(b) < ticketSealing+ticketFixed || len(b) > maxTicket {
		return nil, errTicket
	}
	cur, prev := tk.keys(now)
	id := binary.BigEndian.Uint32(b)
	var k ticketKey
	switch {
	case id == cur.id:
		k = cur
	case prev.aead != nil && id == prev.id:
		k = prev
	default:
		return nil, errTicket
	}
	pt, err := k.aead.Open(nil, b[4:16], b[16:], b[:4])
	if err != nil {
		return nil, errTicket
	}
	t, err := parseTicket(pt)
	if err != nil {
		return nil, err
	}
	if age := now.Sub(t.issued); age < -time.Minute || age > ticketLifetime {
		return nil, errTicket
	}
	return t, nil
}

// identityDigest names a listener's identity in its tickets: a ticket is
// taken only by a listener presenting the same chain.
func identityDigest(chain [][]byte) [32]byte {
	h := sha256.New()
	writeChain(h, chain)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

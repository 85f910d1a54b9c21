// Package crypto holds FSP's packet protection and key schedule: the
// handshake integrity tag, the stateless cookie, the X25519 exchange, the
// session master secret and the per-connection AES-GCM keys derived from
// it with the ALFID pair, renewed every 2^20 packets, and the replay
// window.
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
)

// Sizes of the protocol's cryptographic fields.
const (
	TagLen      = 16 // AES-GCM tag and truncated handshake MAC
	KeyLen      = 16 // AES-128-GCM
	SecretLen   = 32
	NonceLen    = 32 // handshake nonces
	PublicLen   = 32 // X25519
	CookieLen   = 8 + 16
	EpochBits   = 20 // a key protects at most 2^20 packets
	maxPN       = 1 << 62
	ivLen       = 12
	labelPrefix = "fsp/0 "
)

// ErrOpen is returned when a packet fails authentication.
var ErrOpen = errors.New("fsp/crypto: message authentication failed")

func expand(secret []byte, label string, ctx []byte, n int) []byte {
	info := append([]byte(labelPrefix+label), ctx...)
	out := make([]byte, n)
	if _, err := io.ReadFull(hkdf.Expand(sha256.New, secret, info), out); err != nil {
		panic("fsp/crypto: hkdf: " + err.Error()) // cannot happen for n <= 255*32
	}
	return out
}

// HandshakeKey is the key of the integrity tag on packets sent before a
// session key exists. Without a PSK it is public, derived from the
// initiator's ALFID only, so the tag guards against corruption and blind
// injection; with a PSK, strangers cannot even start a handshake.
func HandshakeKey(psk []byte, clientALFID uint32) []byte {
	prk := hkdf.Extract(sha256.New, psk, []byte(labelPrefix+"initial"))
	return expand(prk, "handshake", binary.BigEndian.AppendUint32(nil, clientALFID), SecretLen)
}

// RefusalKey is the key of the tag on a listener's refusal of an
// INIT_CONNECT whose handshake tag failed (a PSK mismatch). It derives
// from the initiator's random nonce, which only the initiator and the
// path saw: an off-path attacker cannot forge a refusal.
func RefusalKey(clientNonce []byte) []byte { return expand(clientNonce, "refuse", nil, SecretLen) }

// HandshakeTag returns the truncated HMAC-SHA256 of msg under key.
func HandshakeTag(key, msg []byte) [TagLen]byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	var t [TagLen]byte
	copy(t[:], m.Sum(nil))
	return t
}

// VerifyHandshakeTag checks a tag appended to msg.
func VerifyHandshakeTag(key, msgAndTag []byte) ([]byte, bool) {
	if len(msgAndTag) < TagLen {
		return nil, false
	}
	msg := msgAndTag[:len(msgAndTag)-TagLen]
	t := HandshakeTag(key, msg)
	return msg, hmac.Equal(t[:], msgAndTag[len(msg):])
}

// KeyPair is an X25519 key pair.
type KeyPair struct {
	Private [32]byte
	Public  [PublicLen]byte
}

// NewKeyPair generates an X25519 key pair (x25519.go).
func NewKeyPair() (*KeyPair, error) { return newX25519() }

var errNoInverse = errors.New("fsp/crypto: X25519 public key at infinity")

// Shared computes the X25519 shared secret with a peer's public key. It
// fails for low-order points.
func (k *KeyPair) Shared(peer []byte) ([]byte, error) {
	if len(peer) != PublicLen {
		return nil, errors.New("fsp/crypto: bad X25519 public key length")
	}
	return curve25519.X25519(k.Private[:], peer)
}

// MasterSecret derives the session master secret from the key-exchange
// output, an optional PSK and both ends' nonces. Clones of a session
// derive their keys from the same master secret with their own ALFIDs.
func MasterSecret(shared, psk, clientNonce, serverNonce []byte) []byte {
	ikm := append(append([]byte(nil), shared...), psk...)
	salt := append(append([]byte(labelPrefix+"master"), clientNonce...), serverNonce...)
	return hkdf.Extract(sha256.New, ikm, salt)
}

// InstallSecret mixes a secret established by the upper layer into a
// master secret, giving the next master secret.
func InstallSecret(master, secret []byte) []byte {
	return hkdf.Extract(sha256.New, secret, append([]byte(labelPrefix+"install"), master...))
}

// ConfirmKey is the key of the handshake's key-confirmation MAC.
func ConfirmKey(master []byte) []byte { return expand(master, "confirm", nil, SecretLen) }

// TrafficSecrets derives the secrets of one connection of a session from
// the master secret and the connection's ALFID pair: initiator to
// responder, and responder to initiator.
func TrafficSecrets(master []byte, initiator, responder uint32) (i2r, r2i []byte) {
	ctx := binary.BigEndian.AppendUint64(nil, uint64(initiator)<<32|uint64(responder))
	return expand(master, "i2r", ctx, SecretLen), expand(master, "r2i", ctx, SecretLen)
}

// epochKey is the AEAD for one key epoch.
type epochKey struct {
	epoch uint64
	aead  cipher.AEAD
}

// Direction protects one direction of a connection. Packet number pn
// uses the key of epoch pn>>EpochBits, derived from the traffic secret,
// and the nonce IV XOR pn, so no (key, nonce) pair repeats. Seal is safe
// for concurrent use, with itself and with Open; Open is not safe for
// concurrent use with itself or Start.
//
// A Direction used to Open keys only three epochs: the one of the largest
// packet number authenticated (current), the one before it (cached, for
// late packets) and the next one. Other epochs are rejected before any
// key is derived, and a packet that fails authentication changes nothing,
// so forged packet numbers cost a forger's victim no more than any other
// forged packet.
type Direction struct {
	secret []byte
	iv     [ivLen]byte
	smu    sync.Mutex  // serialises Seal: guards keys and snonce
	keys   [2]epochKey // Seal: the two most recently used epochs
	snonce [ivLen]byte // Seal's
	nonce  [ivLen]byte // Open's

	// Open.
	cur        uint64   // epoch of the largest packet number authenticated
	prev, curK epochKey // keys of epochs cur-1 (if cached) and cur
	next       epochKey // key of epoch cur+1, derived on first need
}

// NewDirection returns the protection for one direction.
func NewDirection(secret []byte) *Direction {
	d := &Direction{secret: secret}
	copy(d.iv[:], expand(secret, "iv", nil, ivLen))
	return d
}

// Start sets the packet number a receiving direction expects first: until
// a packet authenticates, the epoch of pn is current. A fresh Direction
// starts at zero.
func (d *Direction) Start(pn uint64) {
	d.cur = pn >> EpochBits
	d.prev, d.curK, d.next = epochKey{}, epochKey{}, epochKey{}
}

func (d *Direction) derive(epoch uint64) (cipher.AEAD, error) {
	key := expand(d.secret, "key", binary.BigEndian.AppendUint64(nil, epoch), KeyLen)
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

func (d *Direction) aead(epoch uint64) (cipher.AEAD, error) {
	for i := range d.keys {
		if k := &d.keys[i]; k.aead != nil && k.epoch == epoch {
			return k.aead, nil
		}
	}
	a, err := d.derive(epoch)
	if err != nil {
		return nil, err
	}
	// Keep the newer of the cached epochs, replace the other.
	slot := 0
	if d.keys[0].aead != nil && (d.keys[1].aead == nil || d.keys[0].epoch > d.keys[1].epoch) {
		slot = 1
	}
	d.keys[slot] = epochKey{epoch, a}
	return a, nil
}

// openKey returns the key slot for epoch, deriving the current or the
// next epoch's key on first use; nil for any other epoch.
func (d *Direction) openKey(epoch uint64) *epochKey {
	var k *epochKey
	switch epoch {
	case d.cur:
		k = &d.curK
	case d.cur + 1:
		k = &d.next
	default:
		if d.cur > 0 && epoch == d.cur-1 && d.prev.aead != nil {
			return &d.prev
		}
		return nil
	}
	if k.aead == nil {
		a, err := d.derive(epoch)
		if err != nil {
			return nil
		}
		*k = epochKey{epoch, a}
	}
	return k
}

// Cached reports whether the key of epoch is held for Open.
func (d *Direction) Cached(epoch uint64) bool {
	for _, k := range []*epochKey{&d.prev, &d.curK, &d.next} {
		if k.aead != nil && k.epoch == epoch {
			return true
		}
	}
	return false
}

func (d *Direction) setNonce(pn uint64) []byte {
	d.nonce = d.makeNonce(pn)
	return d.nonce[:]
}

func (d *Direction) makeNonce(pn uint64) [ivLen]byte {
	n := d.iv
	for i := 0; i < 8; i++ {
		n[ivLen-1-i] ^= byte(pn >> (8 * i))
	}
	return n
}

// Seal appends the encrypted payload and tag to dst.
func (d *Direction) Seal(dst []byte, pn uint64, header, payload []byte) ([]byte, error) {
	if pn >= maxPN {
		return nil, errors.New("fsp/crypto: packet numbers exhausted")
	}
	d.smu.Lock()
	defer d.smu.Unlock()
	a, err := d.aead(pn >> EpochBits)
	if err != nil {
		return nil, err
	}
	d.snonce = d.makeNonce(pn)
	return a.Seal(dst, d.snonce[:], payload, header), nil
}

// Open decrypts ciphertext (payload and tag), appends the plaintext to
// dst and returns it, or ErrOpen. dst may be ciphertext[:0] to decrypt in
// place. Only packet numbers of the current epoch, the one before (while
// its key is cached) and the next one can open; a packet of the next
// epoch that authenticates makes it current.
func (d *Direction) Open(dst []byte, pn uint64, header, ciphertext []byte) ([]byte, error) {
	if pn >= maxPN || len(ciphertext) < TagLen {
		return nil, ErrOpen
	}
	epoch := pn >> EpochBits
	k := d.openKey(epoch)
	if k == nil {
		return nil, ErrOpen
	}
	pt, err := k.aead.Open(dst, d.setNonce(pn), ciphertext, header)
	if err != nil {
		return nil, ErrOpen
	}
	if epoch == d.cur+1 {
		d.prev, d.curK, d.next = d.curK, d.next, epochKey{}
		d.cur = epoch
	}
	return pt, nil
}

// ReplayWindow rejects packet numbers seen before or too old to tell.
// The zero value is ready. Its bitmap is a ring (RFC 6479): packet number
// pn is bit pn mod ReplayWindowSize, so a new largest clears the bits it
// passes instead of shifting the whole map.
type ReplayWindow struct {
	largest uint64
	any     bool
	bits    [replayWords]uint64 // bit pn%ReplayWindowSize: pn seen, for pn in (largest-ReplayWindowSize, largest]
}

const (
	replayWords = 16
	// ReplayWindowSize is how far behind the largest packet number a
	// packet may arrive and still be accepted.
	ReplayWindowSize = replayWords * 64
)

// Largest returns the largest packet number accepted.
func (w *ReplayWindow) Largest() uint64 { return w.largest }

// Check reports whether pn is new and within the window.
func (w *ReplayWindow) Check(pn uint64) bool {
	if !w.any || pn > w.largest {
		return true
	}
	if w.largest-pn >= ReplayWindowSize {
		return false
	}
	i := pn % ReplayWindowSize
	return w.bits[i/64]&(1<<(i%64)) == 0
}

// Mark records pn as seen; call it only after the packet authenticated.
func (w *ReplayWindow) Mark(pn uint64) {
	switch {
	case !w.any:
		w.any = true
		w.bits = [replayWords]uint64{}
	case pn > w.largest:
		w.clear(w.largest, pn-w.largest)
	case w.largest-pn >= ReplayWindowSize:
		return
	}
	w.largest = max(w.largest, pn)
	i := pn % ReplayWindowSize
	w.bits[i/64] |= 1 << (i % 64)
}

// clear forgets the packet numbers after, after+n: the window moves over
// them, and their bits held numbers ReplayWindowSize older.
func (w *ReplayWindow) clear(after, n uint64) {
	if n >= ReplayWindowSize {
		w.bits = [replayWords]uint64{}
		return
	}
	for pn := after + 1; n > 0; {
		i := pn % ReplayWindowSize
		bit := i % 64
		k := min(n, 64-bit) // bits to clear in this word
		mask := ^uint64(0)
		if k < 64 {
			mask = 1<<k - 1
		}
		w.bits[i/64] &^= mask << bit
		pn, n = pn+k, n-k
	}
}

// CookieJar makes and checks stateless cookies: a MAC over the client's
// address, ALFID, nonce and a timestamp, under a secret that rotates every
// Lifetime. The previous secret stays valid for one more period.
type CookieJar struct {
	mu       sync.Mutex
	cur, old [32]byte
	rotated  time.Time
	lifetime time.Duration
}

// NewCookieJar returns a jar whose cookies live at most lifetime.
func NewCookieJar(lifetime time.Duration) *CookieJar {
	j := &CookieJar{lifetime: lifetime}
	rand.Read(j.cur[:])
	rand.Read(j.old[:])
	j.rotated = time.Now()
	return j
}

func (j *CookieJar) secrets(now time.Time) (cur, old [32]byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if now.Sub(j.rotated) >= j.lifetime {
		j.old = j.cur
		rand.Read(j.cur[:])
		j.rotated = now
	}
	return j.cur, j.old
}

func cookieMAC(secret [32]byte, addr netip.AddrPort, alfid uint32, nonce []byte, ts uint64) []byte {
	m := hmac.New(sha256.New, secret[:])
	b, _ := addr.MarshalBinary()
	m.Write(b)
	var buf [12]byte
	binary.BigEndian.PutUint32(buf[:], alfid)
	binary.BigEndian.PutUint64(buf[4:], ts)
	m.Write(buf[:])
	m.Write(nonce)
	return m.Sum(nil)[:16]
}

// Make returns a cookie for the client.
func (j *CookieJar) Make(now time.Time, addr netip.AddrPort, alfid uint32, nonce []byte) [CookieLen]byte {
	cur, _ := j.secrets(now)
	ts := uint64(now.UnixMilli())
	var c [CookieLen]byte
	binary.BigEndian.PutUint64(c[:], ts)
	copy(c[8:], cookieMAC(cur, addr, alfid, nonce, ts))
	return c
}

// Verify checks a cookie echoed by the client.
func (j *CookieJar) Verify(now time.Time, c []byte, addr netip.AddrPort, alfid uint32, nonce []byte) bool {
	if len(c) != CookieLen {
		return false
	}
	ts := binary.BigEndian.Uint64(c)
	age := now.UnixMilli() - int64(ts)
	if int64(ts) < 0 || age < -1000 || age > j.lifetime.Milliseconds() {
		return false
	}
	cur, old := j.secrets(now)
	return hmac.Equal(c[8:], cookieMAC(cur, addr, alfid, nonce, ts)) ||
		hmac.Equal(c[8:], cookieMAC(old, addr, alfid, nonce, ts))
}

// ResumptionBase derives, from a session's master secret, the secret its
// resumption tickets derive from.
func ResumptionBase(master []byte) []byte { return expand(master, "resumption", nil, SecretLen) }

// ResumptionSecret derives the secret of one ticket from the resumption
// base and the ticket's nonce.
func ResumptionSecret(base, ticketNonce []byte) []byte {
	return expand(base, "ticket", ticketNonce, SecretLen)
}

// EarlySecret is the traffic secret of a resumed dial's 0-RTT message:
// it derives from the ticket's secret and the client's nonce only, so it
// has no forward secrecy and a replay would open; see the strike register.
func EarlySecret(resumption, clientNonce []byte) []byte {
	return expand(resumption, "early", clientNonce, SecretLen)
}

// BinderKey is the key of the tag on RESTORE and on its answer: only
// the holder of the ticket's secret (the client, and the server that
// opens the ticket) can make it.
func BinderKey(resumption []byte) []byte { return expand(resumption, "binder", nil, SecretLen) }

package crypto

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

func testDirection() *Direction { return NewDirection(bytes.Repeat([]byte{7}, SecretLen)) }

func TestSealOpen(t *testing.T) {
	tx, rx := testDirection(), testDirection()
	hdr := []byte("header")
	for _, pn := range []uint64{0, 1, 1<<EpochBits - 1, 1 << EpochBits, 5 << EpochBits} {
		ct, err := tx.Seal(nil, pn, hdr, []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		pt, err := rx.Open(nil, pn, hdr, ct)
		if err != nil || string(pt) != "hello" {
			t.Fatalf("pn %d: %q %v", pn, pt, err)
		}
		// Wrong packet number, header, or a flipped bit all fail.
		if _, err := rx.Open(nil, pn+1, hdr, ct); err != ErrOpen {
			t.Fatal("wrong pn opened")
		}
		if _, err := rx.Open(nil, pn, []byte("headex"), ct); err != ErrOpen {
			t.Fatal("wrong header opened")
		}
		ct[0] ^= 1
		if _, err := rx.Open(nil, pn, hdr, ct); err != ErrOpen {
			t.Fatal("tampered ciphertext opened")
		}
	}
	// Keys differ between epochs.
	a, _ := tx.Seal(nil, 1, hdr, []byte("x"))
	b, _ := tx.Seal(nil, 1|1<<EpochBits, hdr, []byte("x"))
	if bytes.Equal(a, b) {
		t.Fatal("epochs share a key and nonce")
	}
}

func TestKeySchedule(t *testing.T) {
	m := MasterSecret([]byte("shared"), nil, []byte("cn"), []byte("sn"))
	i2r, r2i := TrafficSecrets(m, 1, 2)
	j2r, _ := TrafficSecrets(m, 1, 3)
	if bytes.Equal(i2r, r2i) || bytes.Equal(i2r, j2r) {
		t.Fatal("traffic secrets collide")
	}
	if bytes.Equal(MasterSecret([]byte("shared"), []byte("psk"), []byte("cn"), []byte("sn")), m) {
		t.Fatal("PSK not mixed in")
	}
	if bytes.Equal(InstallSecret(m, []byte("k")), m) {
		t.Fatal("install did not change the master")
	}
	a, _ := NewKeyPair()
	b, _ := NewKeyPair()
	s1, _ := a.Shared(b.Public[:])
	s2, _ := b.Shared(a.Public[:])
	if !bytes.Equal(s1, s2) {
		t.Fatal("X25519 disagrees")
	}
	if _, err := a.Shared(make([]byte, 32)); err == nil {
		t.Fatal("low-order point accepted")
	}
}

func TestReplayWindow(t *testing.T) {
	var w ReplayWindow
	accept := func(pn uint64) bool {
		if !w.Check(pn) {
			return false
		}
		w.Mark(pn)
		return true
	}
	for _, pn := range []uint64{0, 1, 5, 3, 2, 100, 64, 1000} {
		if !accept(pn) {
			t.Fatalf("fresh %d rejected", pn)
		}
	}
	for _, pn := range []uint64{0, 1, 5, 3, 100, 64, 1000} {
		if accept(pn) {
			t.Fatalf("replayed %d accepted", pn)
		}
	}
	if !accept(999) || !accept(4) {
		t.Fatal("unseen packet in window rejected")
	}
	if !accept(5000) || accept(5000-ReplayWindowSize) || !accept(5000-ReplayWindowSize+1) {
		t.Fatal("window edge wrong")
	}
}

func TestCookie(t *testing.T) {
	j := NewCookieJar(time.Second)
	now := time.Now()
	a := netip.MustParseAddrPort("192.0.2.1:5000")
	c := j.Make(now, a, 42, []byte("nonce"))
	if !j.Verify(now, c[:], a, 42, []byte("nonce")) {
		t.Fatal("valid cookie rejected")
	}
	for _, bad := range []bool{
		j.Verify(now, c[:], netip.MustParseAddrPort("192.0.2.1:5001"), 42, []byte("nonce")),
		j.Verify(now, c[:], a, 43, []byte("nonce")),
		j.Verify(now, c[:], a, 42, []byte("nonc3")),
		j.Verify(now.Add(2*time.Second), c[:], a, 42, []byte("nonce")),
		j.Verify(now, c[:10], a, 42, []byte("nonce")),
	} {
		if bad {
			t.Fatal("bad cookie accepted")
		}
	}
	// Still valid just after one rotation.
	j.secrets(now.Add(time.Second))
	if !j.Verify(now.Add(time.Second), c[:], a, 42, []byte("nonce")) {
		t.Fatal("cookie from previous secret rejected")
	}
}

func TestHandshakeTag(t *testing.T) {
	k := HandshakeKey(nil, 7)
	msg := []byte("packet")
	tag := HandshakeTag(k, msg)
	if _, ok := VerifyHandshakeTag(k, append(msg, tag[:]...)); !ok {
		t.Fatal("tag rejected")
	}
	if _, ok := VerifyHandshakeTag(HandshakeKey([]byte("psk"), 7), append(msg, tag[:]...)); ok {
		t.Fatal("tag accepted under another key")
	}
}

func FuzzOpen(f *testing.F) {
	tx := testDirection()
	ct, _ := tx.Seal(nil, 3, []byte("hdr"), []byte("payload"))
	f.Add(uint64(3), []byte("hdr"), ct)
	f.Add(uint64(0), []byte{}, []byte{})
	f.Add(uint64(1<<62), []byte("x"), make([]byte, 40))
	f.Fuzz(func(t *testing.T, pn uint64, hdr, ct []byte) {
		rx := testDirection()
		pt, err := rx.Open(nil, pn, hdr, ct)
		if err != nil {
			return
		}
		// Anything that opens must be exactly what was sealed.
		again, _ := tx.Seal(nil, pn, hdr, pt)
		if !bytes.Equal(again, ct) {
			t.Fatal("opened a forgery")
		}
	})
}

package crypto

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func testDirection() *Direction { return NewDirection(bytes.Repeat([]byte{7}, SecretLen)) }

func TestSealOpen(t *testing.T) {
	tx, rx := testDirection(), testDirection()
	hdr := []byte("header")
	for _, pn := range []uint64{0, 1, 1<<EpochBits - 1, 1 << EpochBits, 2 << EpochBits} {
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
	// Epochs beyond the next one never open.
	ct, _ := tx.Seal(nil, 5<<EpochBits, hdr, []byte("x"))
	if _, err := rx.Open(nil, 5<<EpochBits, hdr, ct); err != ErrOpen {
		t.Fatal("an epoch three ahead opened")
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

// TestReplayWindowModel checks the window against a set of every packet
// number seen, for random walks with reordering, jumps and replays.
func TestReplayWindowModel(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 1))
		var w ReplayWindow
		seen := map[uint64]bool{}
		var largest uint64
		for range 20000 {
			var pn uint64
			switch k := r.IntN(10); {
			case k < 6 || len(seen) == 0:
				pn = largest + uint64(r.IntN(3)) // mostly in order
			case k < 8:
				pn = largest - min(largest, uint64(r.IntN(2*ReplayWindowSize))) // late or replayed
			case k < 9:
				pn = largest + uint64(r.IntN(3*ReplayWindowSize)) // a jump
			default:
				pn = largest + uint64(r.IntN(200))
			}
			want := !seen[pn] && (len(seen) == 0 || pn > largest || largest-pn < ReplayWindowSize)
			if got := w.Check(pn); got != want {
				t.Fatalf("seed %d: Check(%d) = %v with largest %d, want %v", seed, pn, got, largest, want)
			}
			if want {
				w.Mark(pn)
				seen[pn] = true
				largest = max(largest, pn)
			}
			if w.Largest() != largest {
				t.Fatalf("seed %d: Largest() = %d, want %d", seed, w.Largest(), largest)
			}
		}
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

// forge returns a packet that fails authentication at pn.
func forge(pn uint64) (hdr, ct []byte) {
	ct = make([]byte, 64)
	for i := range ct {
		ct[i] = byte(pn >> (i % 8 * 8))
	}
	return []byte("hdr"), ct
}

// TestForgedEpochsKeepLiveKey opens genuine packets of epoch 3 while
// forged packets claim every nearby epoch: none derives a key beyond the
// next epoch or evicts the live one, and genuine packets keep opening.
func TestForgedEpochsKeepLiveKey(t *testing.T) {
	tx, rx := testDirection(), testDirection()
	const epoch = 3
	rx.Start(epoch << EpochBits)
	hdr := []byte("hdr")
	pn := uint64(epoch<<EpochBits | 10)
	open := func() {
		t.Helper()
		pn++
		ct, _ := tx.Seal(nil, pn, hdr, []byte("data"))
		if _, err := rx.Open(nil, pn, hdr, ct); err != nil {
			t.Fatalf("genuine pn %d: %v", pn, err)
		}
	}
	open()
	for e := uint64(0); e < 64; e++ {
		h, ct := forge(e<<EpochBits | 99)
		if _, err := rx.Open(nil, e<<EpochBits|99, h, ct); err != ErrOpen {
			t.Fatalf("forgery of epoch %d opened", e)
		}
		if !rx.Cached(epoch) {
			t.Fatalf("a forgery of epoch %d evicted the live key", e)
		}
		for _, k := range []*epochKey{&rx.prev, &rx.curK, &rx.next} {
			if k.aead != nil && k.epoch != epoch && k.epoch != epoch+1 {
				t.Fatalf("a forgery of epoch %d made key of epoch %d", e, k.epoch)
			}
		}
		open()
	}
	// A genuine packet of the next epoch moves the window; a late one of
	// the old epoch still opens.
	late := pn + 1
	lateCT, _ := tx.Seal(nil, late, hdr, []byte("late"))
	pn = (epoch+1)<<EpochBits - 1
	open()
	if rx.cur != epoch+1 {
		t.Fatalf("current epoch %d", rx.cur)
	}
	if _, err := rx.Open(nil, late, hdr, lateCT); err != nil {
		t.Fatalf("late packet of the previous epoch: %v", err)
	}
}

// BenchmarkOpenForged compares the cost of dropping a forged packet of
// the current epoch with one that claims a random epoch: they match,
// because no key is derived for the latter.
func BenchmarkOpenForged(b *testing.B) {
	for _, name := range []string{"current-epoch", "random-epoch"} {
		b.Run(name, func(b *testing.B) {
			rx := testDirection()
			tx := testDirection()
			ct, _ := tx.Seal(nil, 1, []byte("hdr"), make([]byte, 1200))
			rx.Open(nil, 1, []byte("hdr"), ct) // the live key
			forged := append([]byte(nil), ct...)
			forged[0] ^= 1
			buf := make([]byte, 0, 1300)
			b.SetBytes(int64(len(ct)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				pn := uint64(2 + i)
				if name == "random-epoch" {
					pn = uint64(i)*0x9e3779b97f4a7c15>>2 | 1<<EpochBits*2
				}
				if _, err := rx.Open(buf, pn, []byte("hdr"), forged); err == nil {
					b.Fatal("forgery opened")
				}
			}
		})
	}
}

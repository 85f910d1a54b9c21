package psi

import "testing"

// TestPSKPin: the cheap pin is the certificate's.
func TestPSKPin(t *testing.T) {
	psk := []byte("0123456789abcdef0123456789abcdef")
	c, err := PSKCertificate(psk)
	if err != nil {
		t.Fatal(err)
	}
	pin, err := PSKPin(psk)
	if err != nil || pin != PinCertificate(c.Leaf) {
		t.Fatalf("PSKPin %v, %v; certificate pin %v", pin, err, PinCertificate(c.Leaf))
	}
	if _, err := PSKPin(psk[:8]); err == nil {
		t.Error("8-byte PSK accepted")
	}
}

func BenchmarkPSKPin(b *testing.B) {
	psk := []byte("0123456789abcdef0123456789abcdef")
	for b.Loop() {
		PSKPin(psk)
	}
}

func BenchmarkPSKCertificate(b *testing.B) {
	psk := []byte("0123456789abcdef0123456789abcdef")
	for b.Loop() {
		PSKCertificate(psk)
	}
}

package quic

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"io"

	quicgo "github.com/quic-go/quic-go"
	"golang.org/x/crypto/hkdf"
)

// resetKeyLabel separates the stateless reset key from every other use
// of the listener's private key.
const resetKeyLabel = "postsockets quic stateless reset key v1"

// statelessResetKey derives the key of a listener's stateless resets
// from its private key, so a listener restarted with the same identity
// on the same port resets the connections its predecessor left (a
// crash) at their next packet instead of leaving them to the idle
// timeout. It returns nil (no stateless resets, quic-go's default) when
// the key is not at hand: no certificate, or a key that cannot be
// exported (a hardware signer).
func statelessResetKey(tc *tls.Config) *quicgo.StatelessResetKey {
	if len(tc.Certificates) == 0 || tc.Certificates[0].PrivateKey == nil {
		return nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(tc.Certificates[0].PrivateKey)
	if err != nil {
		return nil
	}
	var k quicgo.StatelessResetKey
	if _, err := io.ReadFull(hkdf.New(sha256.New, der, nil, []byte(resetKeyLabel)), k[:]); err != nil {
		return nil
	}
	return &k
}

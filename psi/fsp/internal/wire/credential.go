package wire

import (
	"encoding/binary"
	"fmt"
)

// Credential is an end's proof of identity in the handshake: its
// certificate chain (DER, leaf first) and its signature over the
// handshake transcript with the leaf's key. ACK_CONNECT_REQ carries the
// responder's, CLIENT_AUTH the initiator's. On the wire:
//
//	1           number of certificates, at most MaxChain
//	2 + n each  length and DER of each certificate
//	2 + n       length and signature
type Credential struct {
	Chain [][]byte
	Sig   []byte
}

// MaxChain bounds the certificates in a credential.
const MaxChain = 8

// ResetAuthentication is the reason octet of a RESET that refuses the
// receiver's credentials (a PSK, key or certificate the sender does not
// accept).
const ResetAuthentication = 1

// ResetRefused is the reason octet of a protected RESET that refuses a
// connection or clone the sender will not keep (a listener over its
// memory budget or closed, a clone beyond the fork credit or where forks
// are prohibited).
const ResetRefused = 2

// Len returns the encoded length of c.
func (c *Credential) Len() int {
	n := 1 + 2 + len(c.Sig)
	for _, der := range c.Chain {
		n += 2 + len(der)
	}
	return n
}

// AppendCredential appends c to dst. It fails if c has more than
// MaxChain certificates or a field longer than 65535 octets.
func AppendCredential(dst []byte, c *Credential) ([]byte, error) {
	if len(c.Chain) > MaxChain {
		return dst, fmt.Errorf("fsp/wire: %d certificates, at most %d fit", len(c.Chain), MaxChain)
	}
	dst = append(dst, byte(len(c.Chain)))
	for _, der := range c.Chain {
		if len(der) > 0xffff {
			return dst, fmt.Errorf("fsp/wire: certificate of %d octets", len(der))
		}
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(der)))
		dst = append(dst, der...)
	}
	if len(c.Sig) > 0xffff {
		return dst, fmt.Errorf("fsp/wire: signature of %d octets", len(c.Sig))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(c.Sig)))
	return append(dst, c.Sig...), nil
}

// ParseCredential decodes a credential at the start of b and returns
// what follows it. The slices alias b.
func ParseCredential(b []byte) (Credential, []byte, error) {
	var c Credential
	if len(b) < 1 || int(b[0]) > MaxChain {
		return c, nil, fmt.Errorf("%w: credential", ErrMalformed)
	}
	n := int(b[0])
	b = b[1:]
	if n > 0 {
		c.Chain = make([][]byte, 0, n)
	}
	for range n + 1 {
		if len(b) < 2 {
			return Credential{}, nil, fmt.Errorf("%w: truncated credential", ErrMalformed)
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return Credential{}, nil, fmt.Errorf("%w: truncated credential", ErrMalformed)
		}
		field := b[2 : 2+l : 2+l]
		b = b[2+l:]
		if len(c.Chain) < n {
			if l == 0 {
				return Credential{}, nil, fmt.Errorf("%w: empty certificate", ErrMalformed)
			}
			c.Chain = append(c.Chain, field)
		} else {
			c.Sig = field
		}
	}
	return c, b, nil
}

package tcp

import (
	"fmt"

	"github.com/postsockets/postsockets/post"
)

// After the TLS handshake the client sends a fixed-size hello naming the
// Association and, for a fork, the parent's fork token; the server answers
// with a status and the fork token of the new transient. Framed messages
// follow.
//
//	client: "PSTC" | version | kind | association[16] | parent token[16]
//	server: "PSTS" | version | status | token[16]
const (
	helloVersion     = 1
	clientHelloLen   = 4 + 1 + 1 + 16 + 16
	serverHelloLen   = 4 + 1 + 1 + 16
	clientHelloMagic = "PSTC"
	serverHelloMagic = "PSTS"
)

// Kinds of client hello.
const (
	kindRoot = 0
	kindFork = 1
)

// Server hello status codes.
const (
	statusOK      = 0
	statusUnknown = 1 // no transient has the parent token
	statusBusy    = 2 // the accept queue or the parent's fork queue is full, or a fork past the source's quota
	statusBad     = 3 // the hello was not understood
	statusNoFork  = 4 // the server's policy prohibits forking
	statusQuota   = 5 // a root past its source's, prefix's or the listener's connection quota
)

type token [16]byte

type clientHello struct {
	kind   byte
	assoc  [16]byte
	parent token
}

func (h *clientHello) marshal() []byte {
	b := make([]byte, 0, clientHelloLen)
	b = append(b, clientHelloMagic...)
	b = append(b, helloVersion, h.kind)
	b = append(b, h.assoc[:]...)
	return append(b, h.parent[:]...)
}

func parseClientHello(b []byte) (clientHello, error) {
	var h clientHello
	if len(b) != clientHelloLen || string(b[:4]) != clientHelloMagic {
		return h, fmt.Errorf("%w: bad client hello", post.ErrMalformed)
	}
	if b[4] != helloVersion {
		return h, fmt.Errorf("%w: client hello version %d", post.ErrMalformed, b[4])
	}
	h.kind = b[5]
	if h.kind != kindRoot && h.kind != kindFork {
		return h, fmt.Errorf("%w: client hello kind %d", post.ErrMalformed, h.kind)
	}
	copy(h.assoc[:], b[6:22])
	copy(h.parent[:], b[22:38])
	return h, nil
}

type serverHello struct {
	status byte
	token  token
}

func (h *serverHello) marshal() []byte {
	b := make([]byte, 0, serverHelloLen)
	b = append(b, serverHelloMagic...)
	b = append(b, helloVersion, h.status)
	return append(b, h.token[:]...)
}

func parseServerHello(b []byte) (serverHello, error) {
	var h serverHello
	if len(b) != serverHelloLen || string(b[:4]) != serverHelloMagic {
		return h, fmt.Errorf("%w: bad server hello", post.ErrMalformed)
	}
	if b[4] != helloVersion {
		return h, fmt.Errorf("%w: server hello version %d", post.ErrMalformed, b[4])
	}
	h.status = b[5]
	copy(h.token[:], b[6:22])
	return h, nil
}

// err returns the error a dialer reports for a status, or nil.
func (h *serverHello) err() error {
	switch h.status {
	case statusOK:
		return nil
	case statusUnknown:
		return post.Errorf(post.ErrRefused, "peer knows no transient to fork from")
	case statusBusy:
		return post.Errorf(post.ErrBackpressure, "peer's accept or fork queue, or its quota of connections from us, is full")
	case statusQuota:
		return post.Errorf(post.ErrRefused, "peer holds its quota of connections from our source, our prefix or in all")
	case statusBad:
		return post.Errorf(post.ErrMalformed, "peer rejected our hello")
	case statusNoFork:
		return post.Errorf(post.ErrRefused, "peer's policy prohibits forking")
	}
	return post.Errorf(post.ErrMalformed, "server hello status %d", h.status)
}

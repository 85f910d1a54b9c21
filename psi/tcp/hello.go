package tcp

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/postsockets/postsockets/post"
)

// After the TLS handshake the client sends a fixed-size hello naming the
// Association and, for a fork, the parent's fork token; the server answers
// with a status and the fork token of the new transient. Framed messages
// follow.
//
//	client: "PSTC" | version | kind | association[16] | parent token[16]
//	server: "PSTS" | version | status | token[16] [| idle timeout[4]]
//
// A root has no parent: its parent field carries options, zero before 2
// December (servers before then ignore it). Option 1 in its first byte,
// followed by a big-endian idle timeout in milliseconds, asks for
// liveness frames: the framing's heartbeat (framer.Heartbeater), which
// each end sends when it has sent nothing for a while, so that the other
// hears from it end to end. A server that takes them answers with version
// 2 and the idle timeout both ends then keep, the smaller of the two;
// forks keep what their root agreed, the server answering in the same
// way. Neither end sends version 2 to a peer that did not ask.
const (
	helloVersion     = 1
	helloLiveVersion = 2 // server hello: liveness frames agreed
	clientHelloLen   = 4 + 1 + 1 + 16 + 16
	serverHelloLen   = 4 + 1 + 1 + 16
	serverLiveLen    = serverHelloLen + 4 // version 2
	clientHelloMagic = "PSTC"
	serverHelloMagic = "PSTS"
	optLiveness      = 1 // a root's options: liveness frames, idle timeout follows
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

// liveIdle returns the idle timeout a root's hello asks liveness frames
// for, or zero.
func (h *clientHello) liveIdle() time.Duration {
	if h.kind != kindRoot || h.parent[0] != optLiveness {
		return 0
	}
	return time.Duration(binary.BigEndian.Uint32(h.parent[1:5])) * time.Millisecond
}

// askLive asks for liveness frames with the given idle timeout.
func (h *clientHello) askLive(idle time.Duration) {
	h.parent[0] = optLiveness
	binary.BigEndian.PutUint32(h.parent[1:5], millis(idle))
}

// millis is d in whole milliseconds, at least 1, at most 2³²-1.
func millis(d time.Duration) uint32 {
	return uint32(min(max(d.Milliseconds(), 1), 1<<32-1))
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
	idle   uint32 // milliseconds: liveness frames agreed (version 2); 0 if not
}

func (h *serverHello) marshal() []byte {
	b := make([]byte, 0, serverLiveLen)
	b = append(b, serverHelloMagic...)
	v := byte(helloVersion)
	if h.idle != 0 {
		v = helloLiveVersion
	}
	b = append(b, v, h.status)
	b = append(b, h.token[:]...)
	if h.idle != 0 {
		b = binary.BigEndian.AppendUint32(b, h.idle)
	}
	return b
}

// liveIdle returns the idle timeout agreed for liveness frames, or zero.
func (h *serverHello) liveIdle() time.Duration {
	return time.Duration(h.idle) * time.Millisecond
}

// serverHelloRest is how many bytes of a server hello follow its first
// serverHelloLen, judged by its version byte b[4].
func serverHelloRest(b []byte) int {
	if len(b) > 4 && b[4] == helloLiveVersion {
		return serverLiveLen - serverHelloLen
	}
	return 0
}

func parseServerHello(b []byte) (serverHello, error) {
	var h serverHello
	if len(b) < serverHelloLen || string(b[:4]) != serverHelloMagic {
		return h, fmt.Errorf("%w: bad server hello", post.ErrMalformed)
	}
	switch {
	case b[4] == helloVersion && len(b) == serverHelloLen:
	case b[4] == helloLiveVersion && len(b) == serverLiveLen:
		h.idle = binary.BigEndian.Uint32(b[22:])
		if h.idle == 0 {
			return h, fmt.Errorf("%w: server hello agrees an idle timeout of 0", post.ErrMalformed)
		}
	case b[4] != helloVersion && b[4] != helloLiveVersion:
		return h, fmt.Errorf("%w: server hello version %d", post.ErrMalformed, b[4])
	default:
		return h, fmt.Errorf("%w: server hello version %d of %d bytes", post.ErrMalformed, b[4], len(b))
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

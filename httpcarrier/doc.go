// Package httpcarrier carries HTTP over Carriers, after the HTTP over
// SCTP streams design: each request/response exchange is one transaction
// on its own fork of one root Carrier per origin (an FSP clone, a QUIC
// stream or a new TCP connection), so that a loss stalls only the
// transaction it hit. A fork carries one transaction at a time; after a
// clean one it may carry the next.
//
// The request is one message: its head (as in HTTP/1.1) followed by the
// body, sent in parts as the body is read. The end of the message ends
// the body, replacing chunked encoding and Content-Length framing. The
// response is the same on the way back, after any informational (1xx)
// responses, each a message of its own. Trailers travel as one more
// message. docs/http.md describes the mapping.
//
// Transport is an http.RoundTripper and Server serves an http.Handler,
// so net/http code runs unchanged on both sides.
//
// A Server serves 256 requests of a root at once (its slots) and the
// Transport keeps one root per origin, so a gateway's clients share those
// slots. The Transport gives them out by client prefix (an IPv4 /24, an
// IPv6 /48, from the request's context: WithClient, which RequestLimit
// sets): the fuller the origin, the fewer a prefix already holding slots
// may take, a request past its share waits at the Transport, and a freed
// slot goes to the waiting prefix holding fewest. A quarter of the slots
// is kept for prefixes holding none, one each. A prefix alone gets
// half, and a client of a prefix holding none is served at once unless
// at least 65 prefixes hold every slot (Transport.MaxConcurrentRequests).
package httpcarrier

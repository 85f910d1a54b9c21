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
package httpcarrier

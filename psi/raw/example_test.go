package raw_test

import (
	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
	"github.com/postsockets/postsockets/psi/raw"
)

// A Carrier configuration for a RESP server such as redis over plain
// TCP, one CRLF line per message. Plain TCP is unencrypted, so the policy
// names it; without that the race leaves it out.
func Example_plainTCP() {
	cfg := &carrier.Config{Stacks: []psi.Stack{&raw.TCP{Framer: framer.Line{}}}}
	cfg.Policy.Stack(raw.NameTCP, policy.Require)
	_ = cfg // carrier.Initiate(ctx, post.RemoteName("127.0.0.1:6379"), cfg)
}

// A Carrier configuration for an ordinary TLS server speaking a line
// protocol, verified against the system roots under its name.
func Example_tls() {
	cfg := &carrier.Config{Stacks: []psi.Stack{&raw.TLS{ALPN: []string{"imap"}, Framer: framer.Line{}}}}
	_ = cfg // carrier.Initiate(ctx, post.RemoteName("imap.example.com:993"), cfg)
}

// A Carrier to an ordinary web server over TLS with ALPN http/1.1: each
// request sent and each response received is one message, head and body.
func Example_http() {
	cfg := &carrier.Config{Stacks: []psi.Stack{&raw.TLS{ALPN: []string{"http/1.1"}, Framer: framer.HTTP{}}}}
	_ = cfg // c, _ := carrier.Initiate(ctx, post.RemoteName("example.com:443"), cfg)
	// c.Send(ctx, []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
	// m, _ := c.Receive(ctx) // http.ReadResponse(bufio.NewReader(bytes.NewReader(m.Content)), nil)
}

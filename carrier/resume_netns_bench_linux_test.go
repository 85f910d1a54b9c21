package carrier_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/post"
)

// BenchmarkResumedFirstMessageNetns is BenchmarkResumedFirstMessage
// between two network namespaces joined by a 20 ms round-trip delay line
// (TUN, both ways 10 ms, TCP and UDP alike), so TCP+TLS is measured too:
//
//	go test -run XXX -bench ResumedFirstMessageNetns -benchtime 30x ./carrier
func BenchmarkResumedFirstMessageNetns(b *testing.B) {
	if err := netns.Available(); err != nil {
		b.Skipf("needs network namespaces: %v", err)
	}
	srv, cli := netns.New(b, "rsrv"), netns.New(b, "rcli")
	sa, ca := netip.MustParseAddr("10.206.0.1"), netip.MustParseAddr("10.206.0.2")
	if err := netns.DelayLink(b, srv, cli, "rtun", sa, ca, 10*time.Millisecond); err != nil {
		b.Skipf("no delay line: %v", err)
	}
	for _, st := range benchStacks {
		for _, mode := range []string{"full", "resumed", "0rtt"} {
			if st == "tcp" && mode == "0rtt" {
				continue
			}
			b.Run(fmt.Sprintf("%s/%s", st, mode), func(b *testing.B) {
				scfg := serverConfig()
				scfg.Stacks = nsStacks(srv)
				l, err := carrier.Listen(context.Background(), post.Local{Addr: netip.AddrPortFrom(sa, 0)}, scfg)
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				remote := l.Remote(sa.String())
				remote.ServerName = "localhost"
				ccfg := clientConfig()
				ccfg.Stacks = nsStacks(cli)
				benchFirstMessage(b, l, remote, ccfg, st, mode)
			})
		}
	}
}

package carrier_test

import (
	"net/netip"

	"github.com/postsockets/postsockets/post"
)

var localAny = post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}

// benchStacks are the stacks compared side by side.
var benchStacks = []string{"fsp", "quic", "tcp"}

package fsp

import (
	"net/netip"
	"testing"
)

// TestDialLearnsLocalAddress: a Dial on a socket bound to the unspecified
// address knows, once it returns, the local address the listener's
// answer came to (IP_PKTINFO). It learnt it only from the first protected
// packet after the answer, so Path said 0.0.0.0 until then.
func TestDialLearnsLocalAddress(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	ctx := testContext(t)
	go l.Accept(ctx)
	c, err := Dial(ctx, addrOf(l), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.localAddrPort(); got.Addr() != netip.MustParseAddr("127.0.0.1") || got.Port() == 0 {
		t.Fatalf("local address after Dial: %v", got)
	}
}

package association_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/tcp"
)

// An Association races the stacks its policy allows and remembers the
// winner.
func ExampleAssociation_Establish() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sec := psi.Security{PSK: []byte("example pre-shared key")}
	ln, err := (&tcp.Stack{}).Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), &psi.Config{Security: sec})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()

	a, err := association.New(association.Config{
		Remote:   post.RemoteAddr(ln.Addr()),
		Security: sec,
		Stacks:   []psi.Stack{&tcp.Stack{}},
		Policy:   policy.Context{AttemptDelay: 100 * time.Millisecond},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	t, err := a.Establish(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer t.Close()
	w, _ := a.Winner()
	fmt.Println(w.Stack, w.Attempts)
	// Output: tcp 1
}

package ice

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v2"

	"github.com/postsockets/postsockets/post"
)

// startTURN runs a TURN server on loopback for the test.
func startTURN(t *testing.T, user, pass string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const realm = "postsockets.test"
	key := turn.GenerateAuthKey(user, realm, pass)
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:         realm,
		LoggerFactory: loggerFactory{slog.New(slog.DiscardHandler)},
		AuthHandler: func(u, r string, _ net.Addr) ([]byte, bool) {
			return key, u == user && r == realm
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: net.ParseIP("127.0.0.1"),
				Address:      "127.0.0.1",
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return "turn:127.0.0.1:" + strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port) + "?transport=udp"
}

// TestRelayOnly connects two agents that may only use relayed candidates
// from a loopback TURN server.
func TestRelayOnly(t *testing.T) {
	checkGoroutines(t)
	url := startTURN(t, "user", "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := loopbackConfig()
	cfg.TURN = []TURNServer{{URL: url, Username: "user", Password: "secret"}}
	cfg.CandidateTypes = []CandidateType{Relay}
	a, b := newPeer(t, ctx, cfg), newPeer(t, ctx, cfg)
	for _, p := range []*peer{a, b} {
		for _, c := range p.cands {
			if ci, err := ParseCandidate(c); err != nil || ci.Type != Relay {
				t.Fatalf("candidate %q: %+v, %v", c, ci, err)
			}
		}
	}
	if err := a.agent.AddRemote(b.ufrag, b.pwd, b.cands); err != nil {
		t.Fatal(err)
	}
	if err := b.agent.AddRemote(a.ufrag, a.pwd, a.cands); err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		cb   *PacketConn
		errB error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cb, errB = b.agent.Connect(ctx, false)
	}()
	ca, errA := a.agent.Connect(ctx, true)
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("connect: %v / %v", errA, errB)
	}
	if l, r, ok := a.agent.Selected(); !ok || l.Type != Relay || r.Type != Relay {
		t.Fatalf("selected %v -> %v", l, r)
	}
	buf := make([]byte, 1500)
	for i := range 10 {
		msg := []byte("relayed " + strconv.Itoa(i))
		if _, err := ca.WriteTo(msg, nil); err != nil {
			t.Fatal(err)
		}
		n, _, err := cb.ReadFrom(buf)
		if err != nil || string(buf[:n]) != string(msg) {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
	}
}

// TestWrongTURNPassword gathers no relayed candidate and says so.
func TestWrongTURNPassword(t *testing.T) {
	checkGoroutines(t)
	url := startTURN(t, "user", "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := loopbackConfig()
	cfg.TURN = []TURNServer{{URL: url, Username: "user", Password: "wrong"}}
	cfg.CandidateTypes = []CandidateType{Relay}
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if c, err := a.Gather(ctx); !errors.Is(err, post.ErrNoCandidates) {
		t.Fatalf("gathered %q, %v with a wrong password", c, err)
	}
}

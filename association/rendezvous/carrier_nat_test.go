package rendezvous_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func init() { rendezvous.NATCarrierPeer = natCarrierPeer }

// natCarrierPeer is one peer of TestNATCarrierQUIC: a Carrier with FSP
// prohibited says hello, then the controlling side sends size bytes and
// the other returns their SHA-256.
func natCarrierPeer(ctx context.Context, key *rendezvous.Key, peer rendezvous.PeerID, url string, servers []rendezvous.NATICEServer, size int, res *rendezvous.NATResult) error {
	cfg := &carrier.Config{
		Security:   psi.Security{Certificates: []tls.Certificate{key.Certificate}},
		Rendezvous: association.RendezvousConfig{IPv4Only: true},
	}
	cfg.Policy.Stack("fsp", policy.Prohibit)
	for _, s := range servers {
		cfg.Policy.ICEServers = append(cfg.Policy.ICEServers, policy.ICEServer{URL: s.URL, Username: s.Username, Password: s.Password})
	}
	c, err := carrier.Initiate(ctx, post.Remote{Peer: string(peer), Rendezvous: url}, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	res.Transport = c.Stack()
	res.Controlling = rendezvous.Controlling(key.ID, peer)
	p := c.Path()
	res.RemoteAddr = p.Remote.String()
	if types, ok := strings.CutPrefix(p.Interface, "ice:"); ok {
		res.Local, res.Remote, _ = strings.Cut(types, "/")
	}
	if err := c.Send(ctx, []byte("hello from "+os.Getenv("PS_NAT_SELF"))); err != nil {
		return err
	}
	m, err := c.Receive(ctx)
	if err != nil {
		return err
	}
	res.Hello = string(m.Content)
	start := time.Now()
	const chunk = 256 << 10
	if res.Controlling {
		data := make([]byte, size)
		rand.NewChaCha8([32]byte{1, 2, 3}).Read(data)
		sum := sha256.Sum256(data)
		res.SHA256, res.Bytes = hex.EncodeToString(sum[:]), size
		for off := 0; off < len(data); off += chunk {
			if err := c.Send(ctx, data[off:min(off+chunk, len(data))]); err != nil {
				return err
			}
		}
		if err := c.Send(ctx, []byte{}); err != nil { // end of file
			return err
		}
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		if string(m.Content) != res.SHA256 {
			return fmt.Errorf("peer got SHA-256 %s, sent %s", m.Content, res.SHA256)
		}
	} else {
		h := sha256.New()
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return err
			}
			if len(m.Content) == 0 {
				break
			}
			h.Write(m.Content)
			res.Bytes += len(m.Content)
		}
		res.SHA256 = hex.EncodeToString(h.Sum(nil))
		if err := c.Send(ctx, []byte(res.SHA256)); err != nil {
			return err
		}
		// Wait for the sender to close, so the last message is not lost
		// with our path.
		if _, err := c.Receive(ctx); err == nil {
			return errors.New("a message after the SHA-256")
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return nil
}

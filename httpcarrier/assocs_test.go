package httpcarrier_test

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/internal/fronttest"
)

// TestTransportAssocsBounded: the Transport keeps the Associations of
// the origins used most recently, at most its bound, not one for every
// origin it ever reached (it kept them all, about 5 KiB each, so a
// client of ever new origins grew without bound).
func TestTransportAssocsBounded(t *testing.T) {
	client, _, _, _ := setup(t, "fsp", echo())
	kept := httpcarrier.BoundAssocs(client.Transport.(*httpcarrier.Transport), 2)
	for _, origin := range []string{"a.example:1", "b.example:1", "c.example:1"} {
		resp, err := client.Get("http://" + origin + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := kept(); n != 2 {
		t.Fatalf("the Transport keeps %d Associations after 3 origins, want 2", n)
	}
}

// TestTransportSlotsForgotten: the Transport forgets the slots an origin
// announced once it has no root to it and no request for it (the next
// root says again), so a client of ever new origins does not keep one
// number for each forever (it kept them all).
func TestTransportSlotsForgotten(t *testing.T) {
	client, _, _, _ := setup(t, "fsp", echo(), func(s *httpcarrier.Server) { s.MaxConcurrentRequests = 100 })
	tr := client.Transport.(*httpcarrier.Transport)
	origins := []string{"a.example:1", "b.example:1", "c.example:1"}
	for _, origin := range origins {
		resp, err := client.Get("http://" + origin + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, origin := range origins {
		fronttest.Eventually(t, 20*time.Second, "the announcement of "+origin, func() error {
			if n := httpcarrier.Slots(tr, origin); n != 100 {
				return fmt.Errorf("%d slots", n)
			}
			return nil
		})
	}
	tr.CloseIdleConnections()
	if n := httpcarrier.SlotsKept(tr); n != 0 {
		t.Fatalf("the Transport keeps the slots of %d origins it no longer uses, want 0", n)
	}
}

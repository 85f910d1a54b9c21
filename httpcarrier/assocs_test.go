package httpcarrier_test

import (
	"io"
	"testing"

	"github.com/postsockets/postsockets/httpcarrier"
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

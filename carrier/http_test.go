package carrier_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/postsockets/postsockets/carrier"
)

// TestHTTPOverCarrier serves and calls net/http over Carriers.
func TestHTTPOverCarrier(t *testing.T) {
	l := listen(t, serverConfig())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
	})}
	go srv.Serve(carrier.NewNetListener(l))
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{DialContext: carrier.Dialer(clientConfig())}}
	defer client.CloseIdleConnections()
	url := "http://" + l.Remote("localhost").Name
	for i := range 3 {
		resp, err := client.Get(fmt.Sprintf("%s/item/%d", url, i))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("GET /item/%d 0", i); string(body) != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
	resp, err := client.Post(url+"/upload", "application/octet-stream", io.LimitReader(zeros{}, 3<<20))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("POST /upload %d", 3<<20); string(body) != want {
		t.Fatalf("got %q, want %q", body, want)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

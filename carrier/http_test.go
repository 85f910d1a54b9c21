package carrier_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

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

// TestConnDeadline: a read deadline interrupts a blocked Read with a
// timeout, and clearing it lets the next Read get the data.
func TestConnDeadline(t *testing.T) {
	c, s := pair(t, nil, nil)
	conn := carrier.NewConn(s)
	conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 16)
	_, err := conn.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout", err)
	}
	conn.SetReadDeadline(time.Time{})
	c.Send(ctxT(t), []byte("late"))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("%q %v", buf[:n], err)
	}
}

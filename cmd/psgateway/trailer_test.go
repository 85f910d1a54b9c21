package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRequestTrailersPass: trailers a client sends after a request body
// reach the origin through both gateways, as response trailers reach the
// client. ReverseProxy gives the origin's request a copy of the
// client's Trailer map made before the body was read, so the gateways
// pass the map itself.
func TestRequestTrailersPass(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Trailer", "X-Echo")
		io.WriteString(w, "body="+string(body)+" sum="+r.Trailer.Get("X-Sum"))
		w.Header().Set("X-Echo", r.Trailer.Get("X-Sum"))
	}))
	defer origin.Close()
	front := gateways(t, origin.URL)
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	for _, c := range []struct {
		name  string
		rt    http.RoundTripper
		major int
	}{{"HTTP/1.1", http.DefaultTransport, 1}, {"h2c", h2c, 2}} {
		t.Run(c.name, func(t *testing.T) { trailerRoundTrip(t, c.rt, front, c.major) })
	}
}

func trailerRoundTrip(t *testing.T, rt http.RoundTripper, front string, major int) {
	req, err := http.NewRequest("POST", "http://"+front+"/", io.MultiReader(strings.NewReader("hello")))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sum": {"5d41402a"}}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != major {
		t.Fatalf("the front answered in %s", resp.Proto)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || string(b) != "body=hello sum=5d41402a" {
		t.Fatalf("%s: %q; want the request trailer at the origin", resp.Status, b)
	}
	if got := resp.Trailer.Get("X-Echo"); got != "5d41402a" {
		t.Fatalf("response trailer X-Echo %q", got)
	}
}

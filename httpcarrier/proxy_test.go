package httpcarrier_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/postsockets/postsockets/post"
)

// TestReverseProxyOriginCut: an httputil.ReverseProxy served by Server
// whose origin breaks off a chunked response mid-body must not pass the
// cut body on as complete: the proxy aborts the handler only when the
// request's context says it runs under a server (http.ServerContextKey),
// and the client then sees an error from Body.Read, as behind net/http.
func TestReverseProxyOriginCut(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 5000)) // no Content-Length: chunked
		w.(http.Flusher).Flush()
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close() // no last chunk
		}
	}))
	defer origin.Close()
	target, _ := url.Parse(origin.URL)
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	client, u, _, _ := setup(t, "fsp", proxy)
	resp, err := client.Get(u + "/cut")
	if err != nil {
		// The proxy's abort can overtake the head it wrote: an error
		// wrapping post.ErrReset says as clearly that nothing whole came.
		if !errors.Is(err, post.ErrReset) {
			t.Fatal(err)
		}
		return
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes of a response the origin cut off, then a clean end", n)
	}
}

// TestServerContextKey: a handler finds an *http.Server under
// http.ServerContextKey, as under net/http.
func TestServerContextKey(t *testing.T) {
	client, u, _, _ := setup(t, "fsp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s, ok := r.Context().Value(http.ServerContextKey).(*http.Server); !ok || s == nil {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	resp, err := client.Get(u + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("no *http.Server under http.ServerContextKey")
	}
}

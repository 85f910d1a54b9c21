package httpcarrier_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/internal/leakcheck"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

var certs = testcert.Must()

// setup serves h over stack ("" races them all) and returns a client and
// the origin URL.
func setup(t *testing.T, stack string, h http.Handler, opts ...func(*httpcarrier.Server)) (*http.Client, string, *httpcarrier.Server, *atomic.Int32) {
	t.Helper()
	leakcheck.Check(t)
	scfg := &carrier.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
	ccfg := &carrier.Config{Security: psi.Security{RootCAs: certs.Pool}}
	if stack != "" {
		scfg.Policy.Stack(stack, policy.Require)
		ccfg.Policy.Stack(stack, policy.Require)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, scfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &httpcarrier.Server{Handler: h}
	for _, o := range opts {
		o(srv)
	}
	roots := new(atomic.Int32)
	go func() {
		for {
			c, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			roots.Add(1)
			srv.ServeCarrier(c)
		}
	}()
	t.Cleanup(func() {
		// After the client closed its roots (the cleanup below runs
		// first), a graceful shutdown lets both ends close in order.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		l.Close()
	})
	remote := l.Remote("localhost")
	tr := &httpcarrier.Transport{Config: ccfg, Remote: func(string) post.Remote { return remote }}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, "http://localhost:" + strconv.Itoa(int(l.Addr().Port())), srv, roots
}

func forStacks(t *testing.T, f func(t *testing.T, stack string)) {
	for _, st := range []string{"fsp", "quic", "tcp"} {
		t.Run(st, func(t *testing.T) { f(t, st) })
	}
}

// echo answers with the method, path, body digest and length, and copies
// the request's trailers into its own.
func echo() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Trailer", "X-Got-Trailer")
		fmt.Fprintf(w, "%s %s %d %x", r.Method, r.URL.RequestURI(), n, h.Sum(nil))
		w.Header().Set("X-Got-Trailer", r.Trailer.Get("X-Sum"))
	})
	mux.HandleFunc("/blob/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		data := blob(n)
		sum := sha256.Sum256(data)
		w.Header().Set("X-Sha256", hex.EncodeToString(sum[:]))
		for len(data) > 0 { // in uneven parts, flushing some
			k := min(len(data), 50_000)
			w.Write(data[:k])
			data = data[k:]
			if len(data)%3 == 0 {
				w.(http.Flusher).Flush()
			}
		}
	})
	return mux
}

func blob(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestRoundTrip(t *testing.T) { forStacks(t, testRoundTrip) }

func testRoundTrip(t *testing.T, stack string) {
	client, url, _, roots := setup(t, stack, echo())
	for i := range 3 {
		resp, err := client.Get(fmt.Sprintf("%s/item/%d?q=1", url, i))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		empty := sha256.Sum256(nil)
		if want := fmt.Sprintf("GET /item/%d?q=1 0 %x", i, empty); err != nil || string(b) != want {
			t.Fatalf("got %q %v, want %q", b, err, want)
		}
	}
	for _, n := range []int{0, 1, 70_000, 3 << 20} {
		data := blob(n)
		sum := sha256.Sum256(data)
		resp, err := client.Post(url+"/up", "application/octet-stream", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("POST /up %d %x", n, sum); string(b) != want {
			t.Fatalf("got %q, want %q", b, want)
		}
		resp, err = client.Get(fmt.Sprintf("%s/blob/%d", url, n))
		if err != nil {
			t.Fatal(err)
		}
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		got := sha256.Sum256(b)
		if err != nil || len(b) != n || hex.EncodeToString(got[:]) != resp.Header.Get("X-Sha256") {
			t.Fatalf("blob %d: got %d bytes, %v", n, len(b), err)
		}
	}
	if n := roots.Load(); n != 1 {
		t.Errorf("%d root carriers for one origin, want 1", n)
	}
}

// TestStreamingAndTrailers: a body of unknown length streams both ways,
// with trailers both ways.
func TestStreamingAndTrailers(t *testing.T) { forStacks(t, testStreamingAndTrailers) }

func testStreamingAndTrailers(t *testing.T, stack string) {
	client, url, _, _ := setup(t, stack, echo())
	pr, pw := io.Pipe()
	data := blob(200_000)
	sum := sha256.Sum256(data)
	req, _ := http.NewRequest("PUT", url+"/stream", pr)
	req.Trailer = http.Header{"X-Sum": nil}
	go func() {
		for p := data; len(p) > 0; {
			k := min(len(p), 7000)
			pw.Write(p[:k])
			p = p[k:]
		}
		req.Trailer.Set("X-Sum", "abc")
		pw.Close()
	}()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("PUT /stream %d %x", len(data), sum); err != nil || string(b) != want {
		t.Fatalf("got %q %v, want %q", b, err, want)
	}
	if got := resp.Trailer.Get("X-Got-Trailer"); got != "abc" {
		t.Fatalf("trailer %q, want abc (%v)", got, resp.Trailer)
	}
}

func TestStatusCodes(t *testing.T) {
	client, url, _, _ := setup(t, "fsp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "final")
		case "/prefix":
			io.WriteString(w, "body")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		case "/none":
			w.WriteHeader(http.StatusNoContent)
		case "/missing":
			http.NotFound(w, r)
		case "/head":
			io.WriteString(w, "twelve bytes")
		case "/panic":
			panic("test panic")
		case "/short":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "short")
		}
	}))
	var hints []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/hints", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "final" || len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Fatalf("body %q hints %q", b, hints)
	}
	resp, err = client.Get(url + "/prefix")
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "body" || resp.Trailer.Get("X-Late") != "late" {
		t.Fatalf("prefix trailer: %q %v %v", b, err, resp.Trailer)
	}
	for path, code := range map[string]int{"/none": 204, "/missing": 404} {
		resp, err := client.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Fatalf("%s: %d, want %d", path, resp.StatusCode, code)
		}
	}
	resp, err = client.Head(url + "/head")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(b) != 0 || resp.ContentLength != 12 {
		t.Fatalf("HEAD: body %q, length %d", b, resp.ContentLength)
	}
	// A panicking handler and a short body reach the client as errors,
	// never as a complete response.
	for _, path := range []string{"/panic", "/short"} {
		resp, err := client.Get(url + path)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatalf("%s: no error", path)
		}
	}
}

// TestCancel: cancelling a request aborts its fork, and the handler's
// context ends within a second.
func TestCancel(t *testing.T) { forStacks(t, testCancel) }

func testCancel(t *testing.T, stack string) {
	started, ended := make(chan struct{}), make(chan struct{})
	client, url, _, _ := setup(t, stack, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			io.WriteString(w, "ok")
			return
		}
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		close(ended)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/wait", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v", err)
	}
	resp.Body.Close()
	select {
	case <-ended:
	case <-time.After(time.Second):
		t.Fatal("handler context still alive 1 s after the client cancelled")
	}
	// The origin's root carries on.
	resp, err = client.Get(url + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("%q", b)
	}
}

// TestConcurrent runs many requests at once over one root.
func TestConcurrent(t *testing.T) {
	client, url, _, roots := setup(t, "fsp", echo())
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			resp, err := client.Get(fmt.Sprintf("%s/blob/%d", url, i*37))
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := sha256.Sum256(b)
			if err != nil || hex.EncodeToString(got[:]) != resp.Header.Get("X-Sha256") {
				errs <- fmt.Errorf("request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := roots.Load(); n != 1 {
		t.Errorf("%d roots, want 1", n)
	}
}

// TestShutdown: Shutdown lets a request in flight finish, and the client
// then opens a new root for the next one.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	client, url, srv, _ := setup(t, "fsp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "done")
	}))
	resp, err := client.Get(url + "/fast")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		resp, err := client.Get(url + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	time.Sleep(100 * time.Millisecond)
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	close(release)
	if g := <-got; g != "done" {
		t.Fatalf("in-flight request: %q", g)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

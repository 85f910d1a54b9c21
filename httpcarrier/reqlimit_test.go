package httpcarrier

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TestRequestLimitPerAddr: an address (an IPv6 /64) with PerAddr
// requests in progress gets 503 for the next, another /64 does not, and
// an ended request makes room.
func TestRequestLimitPerAddr(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	h := &RequestLimit{PerAddr: 2, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
	})}
	serve := func(remote, path string) int {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	var wg sync.WaitGroup
	for _, remote := range []string{"[2001:db8::1]:1000", "[2001:db8::2]:1000"} { // one /64
		wg.Go(func() {
			if code := serve(remote, "/hold"); code != http.StatusOK {
				t.Errorf("a held request from %s: %d", remote, code)
			}
		})
		<-entered
	}
	if code := serve("[2001:db8::3]:1000", "/"); code != http.StatusServiceUnavailable {
		t.Errorf("a third request from the /64: %d, want 503", code)
	}
	if code := serve("[2001:db8:0:1::1]:1000", "/"); code != http.StatusOK {
		t.Errorf("another /64: %d", code)
	}
	if code := serve("192.0.2.1:1000", "/"); code != http.StatusOK {
		t.Errorf("an IPv4 address: %d", code)
	}
	close(release)
	wg.Wait()
	if code := serve("[2001:db8::3]:1000", "/"); code != http.StatusOK {
		t.Errorf("the /64 once its requests ended: %d", code)
	}
	if len(h.open) != 0 {
		t.Errorf("%d addresses still counted", len(h.open))
	}
}

// TestRequestLimitPerPrefix: addresses of one prefix (an IPv4 /24, an
// IPv6 /48) together have at most PerPrefix requests in progress, each
// within PerAddr; another prefix is served meanwhile.
func TestRequestLimitPerPrefix(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	h := &RequestLimit{PerAddr: 2, PerPrefix: 3, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
	})}
	serve := func(remote, path string) int {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After for %s", remote)
		}
		return w.Code
	}
	var wg sync.WaitGroup
	for _, remote := range []string{"192.0.2.1:1", "192.0.2.1:2", "192.0.2.2:1", "[2001:db8::1]:1", "[2001:db8:0:1::1]:1", "[2001:db8:0:2::1]:1"} {
		wg.Go(func() {
			if code := serve(remote, "/hold"); code != http.StatusOK {
				t.Errorf("a held request from %s: %d", remote, code)
			}
		})
		<-entered
	}
	for _, remote := range []string{"192.0.2.3:1", "[2001:db8:0:ffff::1]:1"} {
		if code := serve(remote, "/"); code != http.StatusServiceUnavailable {
			t.Errorf("a fresh address of a full prefix, %s: %d, want 503", remote, code)
		}
	}
	for _, remote := range []string{"192.0.3.1:1", "[2001:db8:1::1]:1"} {
		if code := serve(remote, "/"); code != http.StatusOK {
			t.Errorf("another prefix, %s: %d", remote, code)
		}
	}
	close(release)
	wg.Wait()
	if code := serve("192.0.2.3:1", "/"); code != http.StatusOK {
		t.Errorf("the /24 once its requests ended: %d", code)
	}
	if len(h.open) != 0 || len(h.prefix) != 0 {
		t.Errorf("%d addresses, %d prefixes still counted", len(h.open), len(h.prefix))
	}
}

package post

import (
	"errors"
	"slices"
	"testing"
)

func TestParseRemoteURL(t *testing.T) {
	for _, c := range []struct {
		in, scheme, name, path string
		alpn                   []string
	}{
		{"https://example.com", "https", "example.com:443", "/", []string{"http/1.1"}},
		{"https://example.com:8443/a?b=c&alpn=h2", "https", "example.com:8443", "/a?b=c", []string{"h2"}},
		{"fsp://10.0.0.1:7000", "fsp", "10.0.0.1:7000", "/", nil},
		{"tcp://[::1]:6379", "tcp", "[::1]:6379", "/", nil},
		{"TLS://h:993?alpn=imap", "tls", "h:993", "/", []string{"imap"}},
		{"quic://h:443?alpn=h3,hq-interop", "quic", "h:443", "/", []string{"h3", "hq-interop"}},
	} {
		r, err := ParseRemoteURL(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if r.Scheme != c.scheme || r.Remote.Name != c.name || r.Path != c.path || !slices.Equal(r.ALPN, c.alpn) {
			t.Errorf("%s: got %+v", c.in, r)
		}
	}
	for _, bad := range []string{"", "ftp://h:21", "tcp://h", "tcp://h:0", "tcp://h:99999",
		"quic://h:443", "tcp://u@h:1", "tcp:h:1", "https://:443", "%zz"} {
		if _, err := ParseRemoteURL(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: err = %v, want ErrInvalid", bad, err)
		}
	}
}

func FuzzParseRemoteURL(f *testing.F) {
	f.Add("quic://h:443?alpn=h3")
	f.Add("https://[::1]/x")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRemoteURL(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%q: %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if _, _, err := r.Remote.HostPort(); err != nil {
			t.Fatalf("%q: Remote %q: %v", s, r.Remote.Name, err)
		}
	})
}

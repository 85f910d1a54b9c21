package post

import (
	"net"
	"net/url"
	"strconv"
	"strings"
)

// RemoteURL is a Remote given as a URL, with what the URL says of the
// stack to reach it: "fsp://host:port" (the Association's usual stacks),
// "tcp://host:port" (plain TCP, unencrypted), "tls://host:port" and
// "quic://host:port" (an ordinary TLS or QUIC server), "https://host"
// (TLS to port 443 with ALPN http/1.1). An ALPN list may follow as
// "?alpn=h2,http/1.1"; quic:// needs one.
type RemoteURL struct {
	// Scheme is the URL's scheme, lower case.
	Scheme string
	Remote Remote
	// ALPN is the protocol list to offer, if any.
	ALPN []string
	// Path is the URL's path and query other than alpn, for the
	// application (an https URL's request target); "/" if empty.
	Path string
}

var defaultPorts = map[string]string{"https": "443", "fsp": "", "tcp": "", "tls": "", "quic": ""}

// ParseRemoteURL parses s without any I/O. An unknown scheme, a missing
// host or port, a user name or a bad port give an error wrapping
// ErrInvalid.
func ParseRemoteURL(s string) (RemoteURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return RemoteURL{}, Errorf(ErrInvalid, "remote URL: %v", err)
	}
	r := RemoteURL{Scheme: strings.ToLower(u.Scheme)}
	def, ok := defaultPorts[r.Scheme]
	switch {
	case !ok:
		return RemoteURL{}, Errorf(ErrInvalid, "remote URL %q: unknown scheme %q (want fsp, tcp, tls, quic or https)", s, u.Scheme)
	case u.Opaque != "" || u.Host == "":
		return RemoteURL{}, Errorf(ErrInvalid, "remote URL %q: no host", s)
	case u.User != nil:
		return RemoteURL{}, Errorf(ErrInvalid, "remote URL %q: user information is not supported", s)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return RemoteURL{}, Errorf(ErrInvalid, "remote URL %q: no host", s)
	}
	if port == "" {
		port = def
	}
	if port == "" {
		return RemoteURL{}, Errorf(ErrInvalid, "remote URL %q: %s needs a port", s, r.Scheme)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return RemoteURL{}, Errorf(ErrInvalid, "remote URL %q: bad port %q", s, port)
	}
	q := u.Query()
	if a := q.Get("alpn"); a != "" {
		for p := range strings.SplitSeq(a, ",") {
			if p = strings.TrimSpace(p); p != "" {
				r.ALPN = append(r.ALPN, p)
			}
		}
	}
	q.Del("alpn")
	switch {
	case r.Scheme == "https" && r.ALPN == nil:
		r.ALPN = []string{"http/1.1"}
	case r.Scheme == "quic" && r.ALPN == nil:
		return RemoteURL{}, Errorf(ErrInvalid, "remote URL %q: quic needs an ALPN (?alpn=...)", s)
	}
	r.Remote = Remote{Name: net.JoinHostPort(host, port)}
	r.Path = u.EscapedPath()
	if r.Path == "" {
		r.Path = "/"
	}
	if len(q) > 0 {
		r.Path += "?" + q.Encode()
	}
	return r, nil
}

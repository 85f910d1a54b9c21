package main

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// errConnectAddr is a CONNECT target that resolved to an address of the
// gateway's own host or link: the back refuses it with 403.
var errConnectAddr = errors.New("the target resolves to a loopback, unspecified, link-local or multicast address")

// connectPolicy is -connect: comma-separated host:port targets, or "*"
// for any. Empty allows none. Targets match exactly (case aside), so
// spellings of an address (127.1, [::ffff:7f00:1], a trailing dot) match
// nothing listed. Whatever a name resolves to when the back dials is
// checked too (dialer): a name listed, or any name under "*", may not
// reach the gateway's own loopback, the unspecified address, link-local
// addresses (cloud metadata) or multicast, so a name an attacker can
// point there (DNS rebinding) does not open the back's own services.
// Only a target listed as such an address literally, or as localhost,
// reaches it.
type connectPolicy struct {
	set map[string]bool
}

func newConnectPolicy(list string) *connectPolicy {
	p := &connectPolicy{set: map[string]bool{}}
	for t := range strings.SplitSeq(list, ",") {
		if t = strings.TrimSpace(t); t != "" {
			p.set[strings.ToLower(t)] = true
		}
	}
	return p
}

// allows reports whether a CONNECT may go to target.
func (p *connectPolicy) allows(target string) bool {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return false
	}
	return p.set["*"] || p.set[strings.ToLower(target)]
}

// dialer returns the dialer for an allowed target: it refuses, with
// errConnectAddr, addresses of the host or link that the target does not
// name literally.
func (p *connectPolicy) dialer(target string) *net.Dialer {
	host, _, _ := net.SplitHostPort(target)
	literal := strings.EqualFold(host, "localhost") && p.set[strings.ToLower(target)]
	if a, err := netip.ParseAddr(host); err == nil && p.set[strings.ToLower(target)] {
		literal = a.IsValid()
	}
	return &net.Dialer{Control: func(_, address string, _ syscall.RawConn) error {
		if literal {
			return nil
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return errConnectAddr
		}
		if a := ap.Addr().Unmap(); a.IsLoopback() || a.IsUnspecified() || a.IsLinkLocalUnicast() ||
			a.IsMulticast() || a.IsInterfaceLocalMulticast() || a.IsLinkLocalMulticast() {
			return errConnectAddr
		}
		return nil
	}}
}

package post

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Local is the local end of an Association: an address or interface to send
// from, and the identity presented to peers.
type Local struct {
	// Addr is the local address to bind; the zero value lets the system
	// choose the address and port.
	Addr netip.AddrPort
	// Interface restricts the Local to one named network interface when
	// initiating. A listener binds Addr only: carrier.Listen refuses a
	// Local with Interface set (an error wrapping ErrNotSupported) rather
	// than listen on every interface.
	Interface string
	// Peer is this end's identity at a rendezvous server, for peer-to-peer
	// Associations.
	Peer string
}

// String returns a human-readable form of l.
func (l Local) String() string {
	s := "any"
	if l.Addr.IsValid() {
		s = l.Addr.String()
	}
	if l.Interface != "" {
		s += "%" + l.Interface
	}
	return s
}

// Remote is the far end of an Association. It is either a name such as
// "example.com:443" that is resolved through DNS, a literal address, or a
// peer identity reached through a rendezvous point.
type Remote struct {
	// Name is "host:port"; host may be a DNS name or a literal address.
	Name string
	// Addrs, if set, are used instead of resolving Name.
	Addrs []netip.AddrPort
	// Peer names a peer identity to reach through Rendezvous.
	Peer string
	// Rendezvous is the address of a rendezvous server for Peer.
	Rendezvous string
	// ServerName is the name to authenticate; it defaults to the host part
	// of Name.
	ServerName string
	// Ports overrides the port per stack name, for stacks that listen on
	// another port than the one in Name.
	Ports map[string]uint16
}

// PortFor returns the port to use for a stack, given the default port.
func (r Remote) PortFor(stack string, def uint16) uint16 {
	if p, ok := r.Ports[stack]; ok {
		return p
	}
	return def
}

// RemoteAddr returns a Remote for a literal address.
func RemoteAddr(ap netip.AddrPort) Remote {
	return Remote{Name: ap.String(), Addrs: []netip.AddrPort{ap}}
}

// RemoteName returns a Remote for "host:port".
func RemoteName(hostport string) Remote { return Remote{Name: hostport} }

// HostPort splits Name into host and port.
func (r Remote) HostPort() (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(r.Name)
	if err != nil {
		return "", 0, fmt.Errorf("post: remote %q: %w", r.Name, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("post: remote %q: bad port: %w", r.Name, err)
	}
	return h, uint16(n), nil
}

// AuthName is the name used to authenticate the remote.
func (r Remote) AuthName() string {
	if r.ServerName != "" {
		return r.ServerName
	}
	if h, _, err := net.SplitHostPort(r.Name); err == nil {
		return h
	}
	return r.Name
}

// String returns a human-readable form of r.
func (r Remote) String() string {
	if r.Peer != "" {
		return r.Peer + "@" + r.Rendezvous
	}
	return r.Name
}

// Path is one local/remote address pair, with what the stack knows of it.
// Estimates are zero when the stack cannot tell.
type Path struct {
	Local     netip.AddrPort
	Remote    netip.AddrPort
	Interface string
	MTU       int
	RTT       time.Duration
	RTTVar    time.Duration
	// Loss is the fraction of packets lost, 0 to 1.
	Loss float64
	// Rate is the estimated delivery rate in bytes per second.
	Rate float64
	// Active reports whether the stack currently sends on this path.
	Active bool
}

// String returns "local->remote".
func (p Path) String() string { return p.Local.String() + "->" + p.Remote.String() }

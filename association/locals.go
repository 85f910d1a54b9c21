package association

import (
	"cmp"
	"net"
	"net/netip"
	"slices"

	"github.com/postsockets/postsockets/policy"
)

// LocalAddr is an address of a local interface.
type LocalAddr struct {
	Interface string
	Addr      netip.Addr
	weight    int
}

// GatherLocals lists the addresses of the up interfaces that the policy
// allows, most preferred first. Link-local addresses are left out.
func GatherLocals(pol *policy.Context) ([]LocalAddr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []LocalAddr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		ok, w := pol.AllowInterface(ifc.Name)
		if !ok {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr().Unmap()
			if ip.IsLinkLocalUnicast() || ip.IsMulticast() {
				continue
			}
			out = append(out, LocalAddr{Interface: ifc.Name, Addr: ip, weight: w})
		}
	}
	slices.SortStableFunc(out, func(a, b LocalAddr) int { return cmp.Compare(b.weight, a.weight) })
	return out, nil
}

// localsFor returns the local addresses to dial remote from: the configured
// Local when set, the policy's interfaces when it names any, otherwise the
// unspecified address (the system picks).
func (a *Association) localsFor(remote netip.AddrPort) []netip.AddrPort {
	if l := a.cfg.Local.Addr; l.IsValid() {
		if !l.Addr().IsUnspecified() && l.Addr().Is4() != remote.Addr().Is4() {
			return nil
		}
		return []netip.AddrPort{l}
	}
	if len(a.cfg.Policy.Interfaces) == 0 && a.cfg.Local.Interface == "" {
		return []netip.AddrPort{{}}
	}
	pol := a.cfg.Policy.Clone()
	if a.cfg.Local.Interface != "" {
		pol.Interface(a.cfg.Local.Interface, policy.Require)
	}
	locals, err := GatherLocals(&pol)
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, l := range locals {
		if l.Addr.Is4() != remote.Addr().Is4() || l.Addr.IsLoopback() != remote.Addr().IsLoopback() {
			continue
		}
		out = append(out, netip.AddrPortFrom(l.Addr, 0))
	}
	return out
}

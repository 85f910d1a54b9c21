package netem

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Relay forwards UDP between clients and one server through two impaired
// directions: up (client to server) and down (server to client). Each
// client source address gets its own upstream socket, so the server sees
// one source per client, and a client that rebinds its port looks like a
// NAT rebinding. The Rate queue of each direction is shared by all
// clients, like one bottleneck link.
type Relay struct {
	front  *net.UDPConn
	server netip.AddrPort
	up     *link[*mapping]
	down   *link[netip.AddrPort]
	wg     sync.WaitGroup

	mu     sync.Mutex
	maps   map[netip.AddrPort]*mapping
	closed bool
}

type mapping struct {
	client netip.AddrPort
	conn   *net.UDPConn
}

// RelayStats holds the counters of both directions of a Relay.
type RelayStats struct {
	Up, Down Stats
	Mappings int // client source addresses currently mapped
}

// NewRelay listens on an ephemeral UDP port of the loopback address of
// server's family and forwards to server.
func NewRelay(server netip.AddrPort, up, down Config) (*Relay, error) {
	return newRelayOn(netip.AddrPortFrom(loopback(server.Addr()), 0), server, up, down)
}

func loopback(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		return netip.IPv6Loopback()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

func newRelayOn(listen, server netip.AddrPort, up, down Config) (*Relay, error) {
	front, err := net.ListenUDP(udpNet(listen.Addr()), net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return nil, err
	}
	r := &Relay{
		front:  front,
		server: server,
		maps:   make(map[netip.AddrPort]*mapping),
	}
	r.up = newLink(up, func(b []byte, m *mapping) error {
		_, err := m.conn.Write(b)
		return err
	})
	r.down = newLink(down, func(b []byte, to netip.AddrPort) error {
		_, err := r.front.WriteToUDPAddrPort(b, to)
		return err
	})
	r.wg.Add(1)
	go r.readFront()
	return r, nil
}

func udpNet(a netip.Addr) string {
	if a.Is4() || a.Is4In6() {
		return "udp4"
	}
	return "udp6"
}

// Addr is the address clients send to.
func (r *Relay) Addr() netip.AddrPort {
	return r.front.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Server is the address the relay forwards to.
func (r *Relay) Server() netip.AddrPort { return r.server }

func (r *Relay) readFront() {
	defer r.wg.Done()
	buf := make([]byte, largeBuf)
	for {
		n, from, err := r.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if m := r.mapping(from); m != nil {
			r.up.send(buf[:n], m)
		}
	}
}

// mapping returns the upstream socket of a client, creating it on the
// client's first packet. It is nil once the relay is closed.
func (r *Relay) mapping(client netip.AddrPort) *mapping {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	if m := r.maps[client]; m != nil {
		return m
	}
	conn, err := net.DialUDP(udpNet(r.server.Addr()), nil, net.UDPAddrFromAddrPort(r.server))
	if err != nil {
		r.up.drop()
		return nil
	}
	m := &mapping{client: client, conn: conn}
	r.maps[client] = m
	r.wg.Add(1)
	go r.readUpstream(m)
	return m
}

func (r *Relay) readUpstream(m *mapping) {
	defer r.wg.Done()
	buf := make([]byte, largeBuf)
	for {
		n, err := m.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP port unreachable from a server not yet up
		}
		r.down.send(buf[:n], m.client)
	}
}

// Rebind forgets every client mapping, as a NAT that lost its state: the
// next packet from each client leaves from a new upstream port.
func (r *Relay) Rebind() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, m := range r.maps {
		m.conn.Close()
		delete(r.maps, k)
	}
}

// SetBlackhole switches dropping of everything, in both directions.
// Packets already in flight are dropped too.
func (r *Relay) SetBlackhole(on bool) {
	r.up.blackhole.Store(on)
	r.down.blackhole.Store(on)
}

// SetConfig replaces the impairments of both directions.
func (r *Relay) SetConfig(up, down Config) {
	r.up.setConfig(up)
	r.down.setConfig(down)
}

// Stats returns the counters of both directions.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	n := len(r.maps)
	r.mu.Unlock()
	return RelayStats{Up: r.up.stats.snapshot(), Down: r.down.stats.snapshot(), Mappings: n}
}

// Close stops forwarding, closes every socket and waits for the relay's
// goroutines to exit.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errClosed
	}
	r.closed = true
	r.mu.Unlock()
	r.up.shutdown()
	r.down.shutdown()
	err := r.front.Close()
	r.mu.Lock()
	for k, m := range r.maps {
		m.conn.Close()
		delete(r.maps, k)
	}
	r.mu.Unlock()
	r.wg.Wait()
	<-r.up.done
	<-r.down.done
	return err
}

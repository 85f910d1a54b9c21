// Package netem emulates an impaired network path in user space for tests.
//
// A Config describes one direction of a path: random loss, delay and
// jitter, reordering, duplication and a rate-limited bottleneck with a
// bounded tail-drop queue. The zero Config is a perfect link.
//
// PacketConn wraps a net.PacketConn and impairs what it sends (and,
// optionally, what it receives), so it can be handed to quic-go or to an
// FSP stack unchanged. Relay is a real UDP socket on the loopback
// interface that forwards between clients and one server through two
// impaired directions, mapping each client source address to its own
// upstream socket the way a NAT does. TCPRelay forwards TCP with the same
// blackhole switch, for "UDP blocked, TCP works" fallback tests.
//
// Delayed packets are released by a single timer-driven goroutine per
// direction from a min-heap ordered by release time; packet buffers come
// from a pool, so steady-state forwarding does not allocate. Release
// times follow Go timers: a packet is never early, and usually late by
// under a millisecond (0.5 ms on average on Linux).
package netem

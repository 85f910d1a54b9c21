//go:build race

package sockio

// poisonFreed: under the race detector, receive space whose last share is
// released is overwritten before it goes back to its pool, so a reader
// that kept a datagram past its Release races with the write, and sees
// the poison.
const poisonFreed = true

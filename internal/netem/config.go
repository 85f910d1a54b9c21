package netem

import (
	"sync/atomic"
	"time"
)

// Config describes the impairments of one direction of a path. The zero
// value is a perfect link. Impairments apply in this order: Blackhole,
// Loss, the Rate bottleneck queue, Delay and Jitter, Reorder, Duplicate.
type Config struct {
	// Loss is the fraction (0..1) of packets dropped at random.
	Loss float64
	// Delay is the one-way propagation delay added to every packet.
	Delay time.Duration
	// Jitter varies each packet's delay uniformly within ±Jitter (never
	// below zero). Jitter alone does not reorder: a packet is never
	// released before one sent earlier, unless Reorder picked that one.
	Jitter time.Duration
	// Reorder is the fraction (0..1) of packets held back an extra
	// ReorderDelay so that packets sent after them overtake them.
	Reorder float64
	// ReorderDelay is the extra delay of a reordered packet; zero means
	// DefaultReorderDelay.
	ReorderDelay time.Duration
	// Duplicate is the fraction (0..1) of packets delivered twice.
	Duplicate float64
	// Rate is the bottleneck bandwidth in bytes per second; zero means
	// unlimited.
	Rate int64
	// QueueBytes bounds the bottleneck queue in front of Rate; a packet
	// that does not fit is dropped (tail drop). Zero means 100 ms worth
	// of Rate, but at least DefaultMinQueueBytes. Unused without Rate.
	QueueBytes int
	// Seed makes the random choices reproducible; zero picks a random
	// seed.
	Seed int64
	// Blackhole starts the link dropping everything. Switch it at run
	// time with SetBlackhole.
	Blackhole bool
}

// Defaults used for zero Config fields.
const (
	DefaultReorderDelay  = 10 * time.Millisecond
	DefaultMinQueueBytes = 3 * 1500
)

func (c *Config) reorderDelay() time.Duration {
	if c.ReorderDelay > 0 {
		return c.ReorderDelay
	}
	return DefaultReorderDelay
}

func (c *Config) queueBytes() float64 {
	if c.QueueBytes > 0 {
		return float64(c.QueueBytes)
	}
	return max(float64(c.Rate)/10, DefaultMinQueueBytes)
}

// Stats counts what one direction of a link did. Read it at any time.
type Stats struct {
	Packets    uint64 // packets delivered, duplicates included
	Bytes      uint64 // bytes delivered
	Dropped    uint64 // packets dropped for any reason
	QueueDrops uint64 // of Dropped, those that overflowed the Rate queue
	Duplicated uint64 // extra copies made by Duplicate
	Reordered  uint64 // packets held back by Reorder
	Errors     uint64 // deliveries the underlying socket refused
}

type counters struct {
	packets, bytes, dropped, queueDrops, duplicated, reordered, errors atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Packets:    c.packets.Load(),
		Bytes:      c.bytes.Load(),
		Dropped:    c.dropped.Load(),
		QueueDrops: c.queueDrops.Load(),
		Duplicated: c.duplicated.Load(),
		Reordered:  c.reordered.Load(),
		Errors:     c.errors.Load(),
	}
}

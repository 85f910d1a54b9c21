// Package assoccache keeps the Associations a dialer made, by address, so
// that later dials to the same address reuse what the first race learned
// (association.Winner). It holds at most Max of them and forgets the
// least recently used first, so a program dialling ever new addresses
// (a proxy) does not keep one Association for each forever.
package assoccache

import (
	"container/list"
	"sync"

	"github.com/postsockets/postsockets/association"
)

// DefaultMax is the number of Associations a zero Cache holds.
const DefaultMax = 1024

// Cache maps addresses to Associations. The zero value is ready to use
// and safe for concurrent use.
type Cache struct {
	// Max bounds the Associations held; zero means DefaultMax.
	Max int

	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // of *entry, most recently used first
}

type entry struct {
	key string
	a   *association.Association
}

// Get returns the Association kept for key, or nil, and marks it used.
func (c *Cache) Get(key string) *association.Association {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	if e == nil {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*entry).a
}

// Add keeps a for key unless an Association is kept for it already, and
// forgets the least recently used past Max.
func (c *Cache) Add(key string, a *association.Association) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[key]; e != nil {
		c.lru.MoveToFront(e)
		return
	}
	if c.m == nil {
		c.m = make(map[string]*list.Element)
	}
	c.m[key] = c.lru.PushFront(&entry{key, a})
	max := c.Max
	if max <= 0 {
		max = DefaultMax
	}
	for c.lru.Len() > max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*entry).key)
	}
}

// Len returns the number of Associations kept.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

package assoccache

import (
	"testing"

	"github.com/postsockets/postsockets/association"
)

func TestCacheBound(t *testing.T) {
	c := Cache{Max: 2}
	a, b, d := &association.Association{}, &association.Association{}, &association.Association{}
	c.Add("a", a)
	c.Add("b", b)
	if c.Get("a") != a { // a is now the most recently used
		t.Fatal("a not kept")
	}
	c.Add("d", d)
	if c.Len() != 2 || c.Get("b") != nil || c.Get("a") != a || c.Get("d") != d {
		t.Fatalf("after a third: len %d, b %p a %p d %p; want b forgotten", c.Len(), c.Get("b"), c.Get("a"), c.Get("d"))
	}
	c.Add("a", d) // kept already: unchanged
	if c.Get("a") != a {
		t.Fatal("Add replaced a kept Association")
	}
}

func TestCacheZero(t *testing.T) {
	var c Cache
	for i := range DefaultMax + 10 {
		c.Add(string(rune(i)), &association.Association{})
	}
	if c.Len() != DefaultMax {
		t.Fatalf("len %d, want %d", c.Len(), DefaultMax)
	}
}

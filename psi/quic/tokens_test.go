package quic

import (
	"fmt"
	"testing"

	quicgo "github.com/quic-go/quic-go"
)

func TestTokenStore(t *testing.T) {
	s := newTokenStore()
	if s.Pop("a") != nil {
		t.Fatal("token for an unknown server")
	}
	a1, a2 := &quicgo.ClientToken{}, &quicgo.ClientToken{}
	s.Put("a", a1)
	if s.Pop("a") != a1 || s.Pop("a") != a1 {
		t.Fatal("Pop does not keep the token for the next dial")
	}
	s.Put("a", a2)
	if s.Pop("a") != a2 {
		t.Fatal("Put does not replace the token")
	}
	for i := range maxTokenServers {
		s.Put(fmt.Sprint(i), &quicgo.ClientToken{})
	}
	if len(s.byKey) != maxTokenServers || s.lru.Len() != maxTokenServers {
		t.Fatalf("%d servers kept, bound %d", len(s.byKey), maxTokenServers)
	}
	if s.Pop("a") != nil {
		t.Fatal("the least recently used server was not forgotten")
	}
}

package quic

import (
	"container/list"
	"sync"

	quicgo "github.com/quic-go/quic-go"
)

// maxTokenServers bounds the servers a stack keeps an address token for.
const maxTokenServers = 256

// tokenStore keeps the newest address token (NEW_TOKEN, RFC 9000 §8.1.3)
// each server gave, for the stack's next dials to it. Unlike quic-go's
// LRU store, Pop does not remove the token: dials racing to one server,
// or a dial that closed before the server's next token arrived, would
// otherwise find none and pay a Retry, which also discards 0-RTT. Reuse
// links a client's connections to that server, as its session tickets
// already do; a server that refuses a reused token sends a Retry.
type tokenStore struct {
	mu    sync.Mutex
	byKey map[string]*list.Element // of *tokenEntry
	lru   list.List                // front: most recently used
}

type tokenEntry struct {
	key string
	tok *quicgo.ClientToken
}

var _ quicgo.TokenStore = (*tokenStore)(nil)

func newTokenStore() *tokenStore {
	return &tokenStore{byKey: make(map[string]*list.Element)}
}

// Pop returns key's newest token, or nil, and keeps it.
func (s *tokenStore) Pop(key string) *quicgo.ClientToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byKey[key]
	if !ok {
		return nil
	}
	s.lru.MoveToFront(e)
	return e.Value.(*tokenEntry).tok
}

// Put makes tok key's token, forgetting the least recently used server's
// when maxTokenServers are kept.
func (s *tokenStore) Put(key string, tok *quicgo.ClientToken) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byKey[key]; ok {
		e.Value.(*tokenEntry).tok = tok
		s.lru.MoveToFront(e)
		return
	}
	if s.lru.Len() >= maxTokenServers {
		old := s.lru.Back()
		delete(s.byKey, old.Value.(*tokenEntry).key)
		s.lru.Remove(old)
	}
	s.byKey[key] = s.lru.PushFront(&tokenEntry{key: key, tok: tok})
}

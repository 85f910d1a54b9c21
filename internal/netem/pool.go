package netem

import "sync"

// Buffers come in two classes: most datagrams fit the small one, and the
// large one holds any UDP payload.
const (
	smallBuf = 2048
	largeBuf = 64 << 10
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
)

// getBuf returns a pooled buffer holding a copy of p.
func getBuf(p []byte) *[]byte {
	var bp *[]byte
	if len(p) <= smallBuf {
		bp = smallPool.Get().(*[]byte)
	} else {
		bp = largePool.Get().(*[]byte)
		if len(p) > cap(*bp) {
			b := make([]byte, len(p))
			bp = &b
		}
	}
	*bp = (*bp)[:len(p)]
	copy(*bp, p)
	return bp
}

func putBuf(bp *[]byte) {
	switch cap(*bp) {
	case smallBuf:
		smallPool.Put(bp)
	case largeBuf:
		largePool.Put(bp)
	}
}

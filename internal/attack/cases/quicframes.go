package cases

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/psi/quic"
)

// QUICUnreadFrames has 8 addresses each keep 4 connections open, each
// forking 64 streams and writing 128 bytes on each in turn, a STREAM
// frame each, as long as the window takes them; the application accepts
// the connections and never their forks. quic-go keeps each frame in a
// buffer of a whole packet (1,452 bytes) until it is read, 11 times its
// bytes that the receive budget does not see; the listener's frame
// count closes a connection whose frames hold over 4 times its window,
// and the attacker dials again 100 ms later (a flood of memory, not of
// handshakes, which QUICHandshakeFlood is); the listener refuses an
// address whose connection it closed so for a few seconds.
func QUICUnreadFrames(o attack.Options) (*attack.Result, error) {
	_, l, _, dial, err := budgetListener(nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	var dials, refused, frames atomic.Int64
	c := attack.Case{
		Name: "QUIC forks fed 128-byte frames nobody reads",
		// The attacker's raw quic-go connections run in this process too.
		Budget: 2 * quicBudget,
		Dial:   dial,
		Attack: func(ctx context.Context, _ *attack.Bytes) {
			var wg sync.WaitGroup
			for _, src := range attack.Sources(8) {
				for range 4 {
					wg.Go(func() {
						for ctx.Err() == nil {
							dials.Add(1)
							n, ok := frameFlood(ctx, src, l.Addr())
							if !ok {
								refused.Add(1)
							}
							frames.Add(n)
							select {
							case <-ctx.Done():
							case <-time.After(100 * time.Millisecond * attack.Slowdown):
							}
						}
					})
				}
			}
			wg.Wait()
		},
		Settle: time.Second,
		Check: func() (string, error) {
			bs := l.BudgetStats()
			note := fmt.Sprintf("%d dials, %d refused; %d frames sent, %d connections closed for frames unread; the budget held at most %s of its %s",
				dials.Load(), refused.Load(), frames.Load(), bs.SmallFrameCloses, attack.MiB(uint64(bs.Peak)), attack.MiB(uint64(bs.Budget)))
			if bs.Peak > bs.Budget {
				return note, fmt.Errorf("listener over its receive budget")
			}
			return note, nil
		},
	}
	return attack.Run(c, o), nil
}

// frameFlood dials to from src with quic-go, opens a root stream and 64
// forks of it (psi/quic stream headers, as rawForks sends, and a 1 MiB
// message's length), and writes 128 bytes on each fork in turn, pausing
// between rounds so that each write leaves as a frame of its own, until
// ctx ends or the connection does. It returns the frames sent, and
// whether the listener took the connection.
func frameFlood(ctx context.Context, src netip.Addr, to netip.AddrPort) (int64, bool) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
	if err != nil {
		return 0, false
	}
	defer pc.Close()
	tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{quic.DefaultALPN}}
	qc, err := quicgo.Dial(ctx, pc, net.UDPAddrFromAddrPort(to), tc, &quicgo.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		return 0, false // refused: the budget is full, or the address held off
	}
	defer qc.CloseWithError(0, "")
	root, err := qc.OpenStream()
	if err != nil {
		return 0, true
	}
	if _, err := root.Write(append([]byte{1, 1}, make([]byte, 16)...)); err != nil {
		return 0, true
	}
	fork := []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 0, byte(root.StreamID()), 0, 0x10, 0, 0}
	var ss []*quicgo.Stream
	for range 64 {
		s, err := qc.OpenStream()
		if err != nil {
			break
		}
		if _, err := s.Write(fork); err != nil {
			break
		}
		ss = append(ss, s)
	}
	chunk := make([]byte, 128)
	var sent int64
	for ctx.Err() == nil && qc.Context().Err() == nil {
		for _, s := range ss {
			s.SetWriteDeadline(time.Now().Add(time.Millisecond))
			if n, _ := s.Write(chunk); n == len(chunk) {
				sent++
			}
		}
		time.Sleep(2 * time.Millisecond * attack.Slowdown)
	}
	return sent, true
}

package congestion

import (
	"math"
	"testing"
	"time"
)

func TestPacerUnpaced(t *testing.T) {
	p := NewPacer(mss)
	now := time.Unix(0, 0)
	for range 1000 {
		if d := p.TimeUntilSend(now, mss); d != 0 {
			t.Fatalf("unpaced pacer delayed %v", d)
		}
		p.OnSent(now, mss)
	}
	p.SetRate(math.NaN())
	p.SetRate(math.Inf(1))
	p.SetRate(-1)
	if p.Rate() != 0 || p.TimeUntilSend(now, mss) != 0 {
		t.Errorf("bad rates must leave the pacer off")
	}
}

func TestPacerBurst(t *testing.T) {
	p := NewPacer(mss)
	p.SetRate(1e6)
	now := time.Unix(0, 0)
	n := 0
	for p.TimeUntilSend(now, mss) == 0 {
		p.OnSent(now, mss)
		n++
	}
	if n != PacerBurstPackets {
		t.Errorf("burst of %d packets, want %d", n, PacerBurstPackets)
	}
	// The wait is what refills one packet's worth at the rate.
	if got, want := p.TimeUntilSend(now, mss), 1400*time.Microsecond; got != want {
		t.Errorf("wait %v, want %v", got, want)
	}
}

// TestPacerSpreadsWindow sends a congestion window through a pacer fed by
// the controller's rate and checks the packets take most of an RTT rather
// than leaving in one burst, with no more than a burst at any instant.
func TestPacerSpreadsWindow(t *testing.T) {
	const window = 100
	c := NewReno(Config{InitialWindowPackets: window})
	c.OnPacketSent(time.Time{}, 0, mss, c.Window())
	c.OnLoss(time.Time{}, 0, mss, c.Window()) // leave slow start: gain 1.25
	var rtt RTTStats
	rtt.Update(100*time.Millisecond, 0)
	p := NewPacer(mss)
	p.SetRate(c.PacingRate(&rtt))

	start := time.Unix(0, 0)
	now := start
	sent := 0
	last, sameInstant := now, 0
	for sent < c.Window() {
		if d := p.TimeUntilSend(now, mss); d > 0 {
			now = now.Add(d)
			continue
		}
		if now.Equal(last) {
			sameInstant++
		} else {
			last, sameInstant = now, 1
		}
		if sameInstant > PacerBurstPackets {
			t.Fatalf("%d packets at one instant", sameInstant)
		}
		p.OnSent(now, mss)
		sent += mss
	}
	// (window - burst) / (1.25 * window / RTT) = 0.8 * RTT * (1 - burst/window)
	elapsed := now.Sub(start)
	want := time.Duration(float64(rtt.SmoothedRTT()) / 1.25 * float64(c.Window()-PacerBurstPackets*mss) / float64(c.Window()))
	if math.Abs(float64(elapsed-want)) > float64(time.Millisecond) {
		t.Errorf("window of %d bytes took %v, want %v", c.Window(), elapsed, want)
	}
	if elapsed > rtt.SmoothedRTT() {
		t.Errorf("pacing took %v, longer than an RTT", elapsed)
	}
}

func TestPacerDebtAndClockSkew(t *testing.T) {
	p := NewPacer(mss)
	p.SetRate(1400e3) // one packet per ms
	now := time.Unix(0, 0)
	for range 20 { // ignore the pacer: 10 packets of debt
		p.OnSent(now, mss)
	}
	if got, want := p.TimeUntilSend(now, mss), 11*time.Millisecond; got != want {
		t.Errorf("wait after debt %v, want %v", got, want)
	}
	// A clock going backwards neither adds tokens nor panics.
	if got := p.TimeUntilSend(now.Add(-time.Hour), mss); got != 11*time.Millisecond {
		t.Errorf("wait with earlier time %v", got)
	}
	// After a long idle period the bucket holds one burst only.
	now = now.Add(time.Hour)
	n := 0
	for p.TimeUntilSend(now, mss) == 0 {
		p.OnSent(now, mss)
		n++
	}
	if n != PacerBurstPackets {
		t.Errorf("burst after idle %d, want %d", n, PacerBurstPackets)
	}
}

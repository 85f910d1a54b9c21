package wire

import (
	"bytes"
	"reflect"
	"testing"
)

func samplePackets() []Packet {
	return []Packet{
		{Header: Header{Opcode: InitConnect, Src: 0x12345678}},
		{Header: Header{Opcode: PureData, Flags: FlagEOT, Window: 5000, Seq: 7, Expected: 3, PN: 99, Dst: 1 << 20, Src: 1 << 21}},
		{Header: Header{Opcode: ConnectRequest, Src: 70000}, HasParam: true,
			Param: ConnectParam{Window: 100, MaxMessage: 1 << 20, Association: [16]byte{1, 2, 3}}, EphemeralKey: bytes.Repeat([]byte{9}, 32)},
		{Header: Header{Opcode: KeepAlive, Flags: FlagAckRequest, Expected: 10}, HasSNACK: true,
			SNACK: SNACK{Latest: 20, AckDelay: 1000, Gaps: []Gap{{1, 2}, {3, 4}}}},
		{Header: Header{Opcode: PureData, Seq: 8, Dst: 1 << 20, Src: 1 << 21}, HasFragment: true, FragOffset: 1160, FragTotal: 1408},
		{Header: Header{Opcode: PureData, Flags: FlagEOT | FlagAbort, Seq: 9, Dst: 1 << 20, Src: 1 << 21}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, p := range samplePackets() {
		b := AppendHeader(nil, &p)
		b = append(b, "payload"...)
		if b[0]&0xc0 != 0 || !IsFSP(b) {
			t.Fatalf("%v: first octet %#x", p.Opcode, b[0])
		}
		var q Packet
		if err := Parse(b, &q); err != nil {
			t.Fatalf("%v: %v", p.Opcode, err)
		}
		if string(q.Payload) != "payload" || len(q.HeaderBytes) != len(b)-7 {
			t.Fatalf("%v: payload %q", p.Opcode, q.Payload)
		}
		if PeekDst(b) != p.Dst {
			t.Fatal("PeekDst")
		}
		q.HeaderBytes, q.Payload = nil, nil
		if len(q.SNACK.Gaps) == 0 {
			q.SNACK.Gaps = nil
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("got %+v\nwant %+v", q, p)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := AppendHeader(nil, &samplePackets()[3])
	for name, mut := range map[string]func([]byte) []byte{
		"short":       func(b []byte) []byte { return b[:HeaderLen-1] },
		"version":     func(b []byte) []byte { b[0] = 1; return b },
		"opcode":      func(b []byte) []byte { b[1] = 0; return b },
		"opcode high": func(b []byte) []byte { b[1] = 16; return b },
		"hsp small":   func(b []byte) []byte { b[3] = 4; return b },
		"hsp large":   func(b []byte) []byte { b[2] = 0xff; return b },
		"ext length":  func(b []byte) []byte { b[HeaderLen+3] = 2; return b },
		"snack odd":   func(b []byte) []byte { b[HeaderLen+3] -= 4; b[3] -= 4; return b[:len(b)-4] },
		"empty gap":   func(b []byte) []byte { b[len(b)-1] = 0; return b },
		"abort alone": func(b []byte) []byte { b[4] = FlagAbort; return b },
	} {
		b := mut(append([]byte(nil), good...))
		var p Packet
		if err := Parse(b, &p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestDecodeSeq(t *testing.T) {
	for _, c := range []struct{ exp, want uint64 }{
		{0, 0}, {5, 3}, {1 << 32, 1<<32 + 5}, {1<<32 + 10, 1<<32 - 2}, {3<<32 + 7, 3<<32 + 1000},
	} {
		if got := DecodeSeq(c.exp, uint32(c.want)); got != c.want {
			t.Errorf("DecodeSeq(%d, %d) = %d, want %d", c.exp, uint32(c.want), got, c.want)
		}
	}
}

func FuzzDecodePacket(f *testing.F) {
	for _, p := range samplePackets() {
		f.Add(append(AppendHeader(nil, &p), 1, 2, 3))
	}
	f.Add([]byte{})
	f.Add(make([]byte, HeaderLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if err := Parse(b, &p); err != nil {
			return
		}
		if p.Flags&FlagAbort != 0 && p.Flags&FlagEOT == 0 {
			t.Fatalf("accepted ABORT without EOT: flags %#x", p.Flags)
		}
		// Re-encoding a decoded packet must decode to the same packet
		// (unknown extensions are dropped, so compare decoded forms).
		payload := append([]byte(nil), p.Payload...)
		enc := append(AppendHeader(nil, &p), payload...)
		var q Packet
		if err := Parse(enc, &q); err != nil {
			t.Fatalf("re-encoded packet does not parse: %v", err)
		}
		if !bytes.Equal(q.Payload, payload) || q.Header != p.Header || q.HasParam != p.HasParam ||
			q.Param != p.Param || !bytes.Equal(q.EphemeralKey, p.EphemeralKey) ||
			q.HasSNACK != p.HasSNACK || q.SNACK.Latest != p.SNACK.Latest || q.SNACK.AckDelay != p.SNACK.AckDelay ||
			q.HasCredit != p.HasCredit || q.Credit != p.Credit ||
			q.HasFragment != p.HasFragment || q.FragOffset != p.FragOffset || q.FragTotal != p.FragTotal ||
			!reflect.DeepEqual(append([]Gap{}, q.SNACK.Gaps...), append([]Gap{}, p.SNACK.Gaps...)) {
			t.Fatalf("decode(encode(x)) != x:\n%+v\n%+v", p, q)
		}
	})
}

func FuzzParseExtensions(f *testing.F) {
	f.Add([]byte{ExtSelectiveNACK, 0, 0, 20, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3})
	f.Add([]byte{ExtConnectParam, 0, 0, 28, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte{ExtEphemeralKey, 0, 0, 5, 1, 0x7f, 0, 0, 4})
	f.Add([]byte{ExtForkCredit, 0, 0, ForkCreditLen, 0, 0, 0, 64})
	f.Add([]byte{ExtFragment, 0, 0, FragmentLen, 4, 0x98, 5, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if ParseExtensions(b, &p) != nil {
			return
		}
		if p.HasFragment && (p.FragTotal == 0 || p.FragOffset >= p.FragTotal) {
			t.Fatalf("FRAGMENT at %d of %d accepted", p.FragOffset, p.FragTotal)
		}
		if len(p.SNACK.Gaps) > MaxGaps {
			t.Fatal("too many gaps")
		}
		for _, g := range p.SNACK.Gaps {
			if g.Gap == 0 || g.Data == 0 {
				t.Fatal("empty gap accepted")
			}
		}
	})
}

func FuzzParseCredential(f *testing.F) {
	good, _ := AppendCredential(nil, &Credential{Chain: [][]byte{[]byte("leaf"), []byte("ca")}, Sig: []byte("signature")})
	f.Add(good)
	f.Add(append(good, 1, 2, 3))
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{MaxChain + 1})
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, rest, err := ParseCredential(b)
		if err != nil {
			return
		}
		if len(c.Chain) > MaxChain {
			t.Fatal("too many certificates")
		}
		enc, err := AppendCredential(nil, &c)
		if err != nil {
			t.Fatal(err)
		}
		if c.Len() != len(enc) || !bytes.Equal(append(enc, rest...), b) {
			t.Fatal("parse and append disagree")
		}
	})
}

func TestCredentialLimits(t *testing.T) {
	if _, err := AppendCredential(nil, &Credential{Chain: make([][]byte, MaxChain+1)}); err == nil {
		t.Fatal("too many certificates encoded")
	}
	if _, err := AppendCredential(nil, &Credential{Sig: make([]byte, 1<<16)}); err == nil {
		t.Fatal("oversized signature encoded")
	}
	for _, b := range [][]byte{nil, {1, 0, 0, 0, 0}, {1, 0, 5, 1}, {0, 0}} {
		if _, _, err := ParseCredential(b); err == nil {
			t.Errorf("%x accepted", b)
		}
	}
}

func FuzzStatelessResetToken(f *testing.F) {
	p := Packet{Header: Header{Opcode: Reset, Dst: 0x10000, Src: 0x20000}}
	f.Add(append(AppendHeader(nil, &p), make([]byte, ResetTokenLen+StatelessResetTag)...))
	f.Add(append(AppendHeader(nil, &p), make([]byte, StatelessResetTag)...))
	p.Opcode = KeepAlive
	f.Add(append(AppendHeader(nil, &p), make([]byte, ResetTokenLen+StatelessResetTag)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if Parse(b, &p) != nil {
			return
		}
		tok, ok := StatelessResetToken(&p)
		if !ok {
			if tok != nil {
				t.Fatal("a token from a packet that is no stateless reset")
			}
			return
		}
		if p.Opcode != Reset || len(tok) != ResetTokenLen || len(b) < StatelessResetLen {
			t.Fatalf("token %x from %v of %d bytes", tok, p.Opcode, len(b))
		}
		if len(p.Payload) != ResetTokenLen+StatelessResetTag || &tok[0] != &p.Payload[0] {
			t.Fatal("the token is not the payload's start")
		}
	})
}

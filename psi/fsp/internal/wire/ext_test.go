package wire

import "testing"

func TestSkipAndPathValidationRoundTrip(t *testing.T) {
	in := Packet{Header: Header{Opcode: KeepAlive, Seq: 9, Dst: 0x10001, Src: 0x20002},
		HasSkip: true, Skip: 0xfffffff0,
		HasChallenge: true, Challenge: 0x0102030405060708,
		HasResponse: true, Response: 0x1112131415161718}
	b := AppendHeader(nil, &in)
	var out Packet
	if err := Parse(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.HasSkip || out.Skip != in.Skip || !out.HasChallenge || out.Challenge != in.Challenge ||
		!out.HasResponse || out.Response != in.Response {
		t.Fatalf("%+v", out)
	}
	if len(out.HeaderBytes) != HeaderLen+SkipLen+12+12 {
		t.Fatalf("header of %d bytes", len(out.HeaderBytes))
	}
	// A SKIP of the wrong length is malformed.
	bad := append([]byte(nil), b[:HeaderLen]...)
	bad = append(bad, ExtSkip, 0, 0, 6, 1, 2)
	bad[2], bad[3] = 0, byte(len(bad))
	if err := Parse(bad, &out); err == nil {
		t.Fatal("short SKIP accepted")
	}
}

func TestForkCreditRoundTrip(t *testing.T) {
	in := Packet{Header: Header{Opcode: KeepAlive, Dst: 0x10001, Src: 0x20002}, HasCredit: true, Credit: 0xfffffffe}
	b := AppendHeader(nil, &in)
	var out Packet
	if err := Parse(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.HasCredit || out.Credit != in.Credit || len(out.HeaderBytes) != HeaderLen+ForkCreditLen {
		t.Fatalf("%+v", out)
	}
	bad := append([]byte(nil), b...)
	bad = append(bad, b[HeaderLen:]...) // the extension twice
	bad[2], bad[3] = 0, byte(len(bad))
	if err := Parse(bad, &out); err == nil {
		t.Fatal("duplicate FORK_CREDIT accepted")
	}
}

func TestFragmentRoundTrip(t *testing.T) {
	in := Packet{Header: Header{Opcode: PureData, Seq: 7, Dst: 0x10001, Src: 0x20002},
		HasFragment: true, FragOffset: 1176, FragTotal: 1408}
	b := AppendHeader(nil, &in)
	var out Packet
	if err := Parse(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.HasFragment || out.FragOffset != 1176 || out.FragTotal != 1408 || len(out.HeaderBytes) != HeaderLen+FragmentLen {
		t.Fatalf("%+v", out)
	}
	for _, bad := range [][2]uint16{{0, 0}, {10, 10}, {11, 10}} {
		in.FragOffset, in.FragTotal = bad[0], bad[1]
		if err := Parse(AppendHeader(nil, &in), &out); err == nil {
			t.Fatalf("FRAGMENT at %d of %d accepted", bad[0], bad[1])
		}
	}
}

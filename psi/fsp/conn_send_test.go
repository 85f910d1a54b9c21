package fsp

import "testing"

// TestPacketShare: a write goes in as few packets as the limit allows,
// all of one size but the last, which is no larger; the size is whole
// AES blocks unless that is above the limit.
func TestPacketShare(t *testing.T) {
	jumbo := 8972 - overhead // the default MaxPathMTU's payload
	for _, limit := range []int{MaxPayload, jumbo, 1000, 17} {
		for _, n := range []int{1, 15, 16, limit - 1, limit, limit + 1, 2*limit - 1, 2 * limit, 65536, 100_000, 1 << 20} {
			share := packetShare(n, limit)
			if share <= 0 || share > limit || share > n || share%16 != 0 && share != limit && share != n {
				t.Errorf("limit %d, %d bytes: packets of %d", limit, n, share)
				continue
			}
			if got, want := (n+share-1)/share, (n+limit-1)/limit; got != want {
				t.Errorf("limit %d, %d bytes: %d packets of %d, want %d packets", limit, n, got, share, want)
			}
		}
	}
	if k := packetShare(65536, jumbo); k != 8192 {
		t.Errorf("64 KiB at the jumbo size: packets of %d, want 8,192", k)
	}
	if k := packetShare(65536, MaxPayload); k != MaxPayload {
		t.Errorf("64 KiB at 1,452 bytes: packets of %d, want full ones (%d)", k, MaxPayload)
	}
}

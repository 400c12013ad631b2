package segments

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzVersionState: retirement records and leases are read from Swift,
// where anything may be: no input panics, what parses is well formed, a
// lease's validity is positive and bounded, and what this imagefs writes
// parses back unchanged.
func FuzzVersionState(f *testing.F) {
	rec, _ := json.Marshal(record{V: 1, Host: "h.1a2b3c", Retired: time.Unix(1796165000, 0).UTC(), Object: "a.img", ETag: "e", Why: "overwrite",
		Objects: map[string][]ObjectRef{"c_segments": {{Name: "a.img/20261201T000000Z-0123456789ab/00000000"}}, "c": {{Name: "u-00001", ETag: "x"}}}})
	lea, _ := json.Marshal(lease{V: 1, Host: "h.1a2b3c", Written: time.Unix(1796165000, 0).UTC(), TTL: 600,
		Pins: []pin{{C: "c_segments", P: "a.img/20261201T000000Z-0123456789ab/"}, {C: "c", P: "u-00001", Exact: true}}})
	for _, s := range [][]byte{rec, lea, []byte(`{"v":1,"ttl_s":1e300,"pins":[]}`), []byte(`{"v":1,"retired":"x"}`), []byte(`null`), []byte(`{"v":1,"ttl_s":-5}`)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := parseRecord(b); err == nil {
			if r.V != 1 || r.Retired.IsZero() {
				t.Fatalf("a record that is not one parsed: %+v", r)
			}
			again, _ := json.Marshal(r)
			if r2, err := parseRecord(again); err != nil || r2.Object != r.Object || countRefs(r2.Objects) != countRefs(r.Objects) {
				t.Fatalf("a record does not round-trip: %v", err)
			}
		}
		if l, ttl, err := parseLease(b, time.Minute); err == nil {
			if ttl <= 0 || ttl > maxLeaseTTL {
				t.Fatalf("lease validity %v out of bounds (ttl_s %v)", ttl, l.TTL)
			}
			for _, p := range l.Pins {
				if p.C == "" {
					t.Fatalf("a pin without a container parsed: %+v", p)
				}
			}
		}
	})
}

// FuzzDigestMeta: block digests come back with every GET; whatever the
// headers hold, parsing does not panic, and what it accepts fits the
// object; what the Writer stores parses back.
func FuzzDigestMeta(f *testing.F) {
	good := digestMeta(nil, 256<<10, []uint32{1, 2, 3})
	f.Add(good[metaDigestBlock], good[metaDigestPart+"0"], "", int64(3*256<<10-5))
	f.Add("262144", "AAAAAQ", "AAAAAg", int64(100))
	f.Add("-1", "", "", int64(0))
	f.Add("9999999999999999999", "////", "====", int64(1<<62))
	f.Fuzz(func(t *testing.T, block, p0, p1 string, size int64) {
		meta := map[string]string{metaDigestBlock: block, metaDigestPart + "0": p0}
		if p1 != "" {
			meta[metaDigestPart+"1"] = p1
		}
		b, crcs, ok := parseDigestMeta(meta, size)
		if ok && (b < minDigestBlock || int64(len(crcs)) != blocks(size, b)) {
			t.Fatalf("accepted digests that do not fit: block %d, %d CRCs, size %d", b, len(crcs), size)
		}
		if size > 0 && size < 1<<40 {
			n := blocks(size, digestBlock(size))
			want := make([]uint32, n)
			for i := range want {
				want[i] = uint32(i) * 2654435761
			}
			b2, got, ok := parseDigestMeta(digestMeta(nil, digestBlock(size), want), size)
			if !ok || b2 != digestBlock(size) || len(got) != len(want) {
				t.Fatalf("the Writer's digests of %d bytes do not parse back", size)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("CRC %d: %x, want %x", i, got[i], want[i])
				}
			}
		}
	})
}

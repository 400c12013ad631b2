package cache

import (
	"bytes"
	"crypto/sha256"
	"path/filepath"
	"testing"
)

// FuzzBlockFile: a block file written by the cache reads back as its data,
// under the key, index and block size it was written for only; any other
// bytes read as a block only if they are exactly what the cache would
// have written; one changed byte anywhere makes the file fail its checks.
// Block names round-trip, and only the cache's own spelling parses.
func FuzzBlockFile(f *testing.F) {
	good := append(encodeHeader("etag-1", 3, 1<<20, []byte("hello")), "hello"...)
	f.Add(good, "etag-1", int64(3), uint32(1<<20), []byte("hello"), uint(7), "0123456789abcdef0123456789abcdef-3")
	f.Add(append(encodeHeader("", 0, 4096, nil), []byte{}...), "", int64(0), uint32(4096), []byte{}, uint(0), "0123456789abcdef0123456789abcdef-0")
	f.Add([]byte("IMGFSBLK"), "k", int64(-1), uint32(0), []byte("x"), uint(100), "0123456789ABCDEF0123456789abcdef-1")
	f.Add(good[:20], "etag-2", int64(1<<40), uint32(1), []byte{0, 1, 2}, uint(1000), "0123456789abcdef0123456789abcdef-01")
	f.Add([]byte{}, "a", int64(9), uint32(64<<10), bytes.Repeat([]byte{0xff}, 300), uint(36), "0123456789abcdef0123456789abcdef-+a")
	f.Fuzz(func(t *testing.T, buf []byte, key string, idx int64, blockSize uint32, data []byte, flip uint, name string) {
		bs := int64(blockSize)
		// Any bytes: accepted only as the cache's own encoding.
		for _, want := range []int64{int64(len(buf)) - blockHeaderLen(key), int64(len(data)), -1} {
			got, err := parseBlockFile(buf, key, idx, bs, want)
			if err == nil {
				again := append(encodeHeader(key, idx, bs, got), got...)
				if !bytes.Equal(again, buf) {
					t.Fatalf("accepted bytes that the cache would not write:\n%x\n%x", buf, again)
				}
			}
		}
		if idx < 0 {
			return
		}
		// The cache's own file: its data, for its own key, index and
		// block size only.
		file := append(encodeHeader(key, idx, bs, data), data...)
		want := int64(len(data))
		got, err := parseBlockFile(file, key, idx, bs, want)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip: %v", err)
		}
		for _, c := range []struct {
			key            string
			idx, bs, wantN int64
		}{{key + "x", idx, bs, want}, {key, idx + 1, bs, want}, {key, idx, bs + 1, want}, {key, idx, bs, want + 1}} {
			if _, err := parseBlockFile(file, c.key, c.idx, c.bs, c.wantN); err == nil {
				t.Fatalf("written for (%q, %d, %d), accepted for (%q, %d, %d)", key, idx, bs, c.key, c.idx, c.bs)
			}
		}
		bad := bytes.Clone(file)
		i := flip % uint(len(bad))
		bad[i] ^= byte(flip>>8) | 1
		if _, err := parseBlockFile(bad, key, idx, bs, want); err == nil {
			t.Fatalf("byte %d changed, file accepted", i)
		}

		// Names.
		if k, ok := parseBlockName(name); ok && filepath.Base(blockName(k)) != name {
			t.Fatalf("name %q parsed to %v, which the cache names %q", name, k, blockName(k))
		}
		sum := sha256.Sum256([]byte(key))
		k := diskKey{hash: [16]byte(sum[:16]), idx: idx}
		if k2, ok := parseBlockName(filepath.Base(blockName(k))); !ok || k2 != k {
			t.Fatalf("name of %v parsed to %v, %v", k, k2, ok)
		}
	})
}

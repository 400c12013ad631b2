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

// FuzzFillLog: any bytes parse as a fill log without panicking, and only
// with the cache's block size; a log the cache writes reads back with
// the blocks it records (the last record of a block wins), also with a
// torn record at its end.
func FuzzFillLog(f *testing.F) {
	f.Add([]byte("IMGFSFIL"), "k", int64(5), []byte{1, 3, 3}, uint(3))
	f.Add([]byte{}, "", int64(0), []byte{}, uint(0))
	f.Add(encodeFillHeader("etag", 1<<20, 64<<10), "etag", int64(1<<20), []byte{0, 15, 2}, uint(20))
	f.Fuzz(func(t *testing.T, buf []byte, key string, size int64, idxs []byte, tear uint) {
		const bs = 64 << 10
		var hash [16]byte
		if fl, err := parseFill(buf, hash, bs); err == nil && (fl.n > int64(len(fl.have)) || fl.logLen > int64(len(buf))) {
			t.Fatalf("parsed %d of %d blocks, log length %d of %d", fl.n, len(fl.have), fl.logLen, len(buf))
		}
		if size < 0 || size > 1<<40 {
			return
		}
		n := (size + bs - 1) / bs
		log := encodeFillHeader(key, size, bs)
		want := map[int64]uint32{}
		for i, b := range idxs {
			if idx := int64(b); idx < n {
				log = append(log, encodeFillRecord(idx, uint32(i))...)
				want[idx] = uint32(i)
			}
		}
		torn := append(log, encodeFillRecord(0, 99)[:tear%fillRecord]...)
		fl, err := parseFill(torn, hash, bs)
		if err != nil {
			t.Fatal(err)
		}
		if fl.key != key || fl.size != size || fl.n != int64(len(want)) || fl.logLen != int64(len(log)) {
			t.Fatalf("read back key %q size %d, %d blocks, log length %d; want %q %d %d %d", fl.key, fl.size, fl.n, fl.logLen, key, size, len(want), len(log))
		}
		for idx, crc := range want {
			if !fl.have[idx] || fl.crcs[idx] != crc {
				t.Fatalf("block %d: have %v crc %d, want %d", idx, fl.have[idx], fl.crcs[idx], crc)
			}
		}
		if _, err := parseFill(log, hash, bs*2); err == nil {
			t.Fatal("a log of another block size parsed")
		}
	})
}

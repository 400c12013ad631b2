package segments

import (
	"crypto/md5"
	"encoding/hex"
	"hash"
	"io"
	"strings"
	"sync"
	"sync/atomic"
)

// segBuf holds the bytes of one segment while it is written. Chunks that
// were never written are nil and read as zeros, so a hole costs no memory.
// Once sealed it is read-only; the uploads and the hasher that use it each
// hold a reference, and the last one gives the chunks back to the pool.
type segBuf struct {
	off    int64    // object offset of the segment's first byte
	chunks [][]byte // ChunkSize each, nil = zeros
	spans  []span   // written ranges, relative to off, sorted and merged
	refs   atomic.Int32
}

type span struct{ lo, hi int64 }

// write copies data to relative offset rel. alloc supplies a chunk (not
// cleared) for each part of the segment touched for the first time; what
// this write does not cover is cleared then, so unwritten bytes read as
// zeros without clearing the whole chunk in the usual case of writes of a
// chunk or more. If alloc fails the bytes copied so far are reported with
// its error.
func (s *segBuf) write(rel int64, data []byte, alloc func() ([]byte, error)) (int, error) {
	n := 0
	for n < len(data) {
		ci := int(rel / ChunkSize)
		for len(s.chunks) <= ci {
			s.chunks = append(s.chunks, nil)
		}
		co := rel % ChunkSize
		if s.chunks[ci] == nil {
			b, err := alloc()
			if err != nil {
				return n, err
			}
			clear(b[:co])
			clear(b[min(co+int64(len(data)-n), ChunkSize):])
			s.chunks[ci] = b
		}
		k := copy(s.chunks[ci][co:], data[n:])
		s.addSpan(rel, rel+int64(k))
		rel += int64(k)
		n += k
	}
	return n, nil
}

func (s *segBuf) addSpan(lo, hi int64) {
	// The usual case: appending at the end of the last span.
	if l := len(s.spans); l > 0 && s.spans[l-1].lo <= lo && lo <= s.spans[l-1].hi {
		s.spans[l-1].hi = max(s.spans[l-1].hi, hi)
		return
	}
	out := s.spans[:0:0]
	for _, sp := range s.spans {
		if sp.hi < lo || sp.lo > hi { // disjoint, not touching
			out = append(out, sp)
			continue
		}
		lo, hi = min(lo, sp.lo), max(hi, sp.hi)
	}
	out = append(out, span{lo, hi})
	for i := len(out) - 1; i > 0 && out[i].lo < out[i-1].lo; i-- {
		out[i], out[i-1] = out[i-1], out[i]
	}
	s.spans = out
}

// full reports whether bytes [0, n) are all written.
func (s *segBuf) full(n int64) bool {
	return len(s.spans) == 1 && s.spans[0].lo == 0 && s.spans[0].hi >= n
}

// empty reports whether nothing was written.
func (s *segBuf) empty() bool { return len(s.spans) == 0 }

// written reports whether byte rel was written.
func (s *segBuf) written(rel int64) (span, bool) {
	for _, sp := range s.spans {
		if sp.lo <= rel && rel < sp.hi {
			return sp, true
		}
		if sp.lo > rel {
			return sp, false // the next written span
		}
	}
	return span{}, false
}

// runs returns the ranges of [0, n) to upload: the written spans, where
// two spans separated by fewer than mergeGap unwritten bytes that read as
// zeros (at or after zerosFrom) become one range with the zeros inside.
// Larger gaps are referenced, not uploaded.
func (s *segBuf) runs(n, zerosFrom, mergeGap int64) []span {
	var out []span
	for _, sp := range s.spans {
		sp.hi = min(sp.hi, n)
		if sp.lo >= sp.hi {
			continue
		}
		if l := len(out); l > 0 {
			prev := &out[l-1]
			if gap := sp.lo - prev.hi; gap < mergeGap && prev.hi >= zerosFrom {
				prev.hi = sp.hi
				continue
			}
		}
		out = append(out, sp)
	}
	return out
}

// chunkCount is the number of chunks held.
func (s *segBuf) chunkCount() int64 {
	var n int64
	for _, c := range s.chunks {
		if c != nil {
			n++
		}
	}
	return n
}

// clip forgets everything from relative offset n on, giving back the
// chunks it no longer needs; it returns how many.
func (s *segBuf) clip(n int64, p *Pool) int64 {
	var freed int64
	for i, c := range s.chunks {
		lo := int64(i) * ChunkSize
		switch {
		case c == nil:
		case lo >= n:
			p.free(c)
			s.chunks[i] = nil
			freed++
		case lo+ChunkSize > n:
			clear(c[n-lo:])
		}
	}
	out := s.spans[:0]
	for _, sp := range s.spans {
		if sp.lo < n {
			out = append(out, span{sp.lo, min(sp.hi, n)})
		}
	}
	s.spans = out
	return freed
}

// free gives all chunks back to the pool and returns how many there were.
func (s *segBuf) free(p *Pool) int64 {
	var n int64
	for i, c := range s.chunks {
		if c != nil {
			p.free(c)
			s.chunks[i] = nil
			n++
		}
	}
	return n
}

// ReadAt implements io.ReaderAt over the segment (unwritten bytes are zeros).
func (s *segBuf) ReadAt(b []byte, rel int64) (int, error) {
	n := 0
	for n < len(b) {
		ci := int((rel + int64(n)) / ChunkSize)
		co := (rel + int64(n)) % ChunkSize
		want := min(int64(len(b)-n), ChunkSize-co)
		if ci < len(s.chunks) && s.chunks[ci] != nil {
			copy(b[n:n+int(want)], s.chunks[ci][co:co+want])
		} else {
			clear(b[n : n+int(want)])
		}
		n += int(want)
	}
	return n, nil
}

// section returns bytes [lo, hi) as a rewindable body.
func (s *segBuf) section(lo, hi int64) io.ReadSeeker { return io.NewSectionReader(s, lo, hi-lo) }

// hashRange writes bytes [lo, hi) to h, chunk by chunk, without copying.
func (s *segBuf) hashRange(lo, hi int64, h hash.Hash) {
	for lo < hi {
		ci := int(lo / ChunkSize)
		co := lo % ChunkSize
		l := min(ChunkSize-co, hi-lo)
		if ci < len(s.chunks) && s.chunks[ci] != nil {
			h.Write(s.chunks[ci][co : co+l])
		} else {
			h.Write(zeroChunk[:l])
		}
		lo += l
	}
}

// md5hex is the hex MD5 of bytes [lo, hi).
func (s *segBuf) md5hex(lo, hi int64) string {
	h := md5.New()
	s.hashRange(lo, hi, h)
	return hex.EncodeToString(h.Sum(nil))
}

// digests returns the block digests of bytes [lo, hi) as object
// metadata, added to meta (see digest.go).
func (s *segBuf) digests(lo, hi int64, meta map[string]string) map[string]string {
	block, crcs := blockDigests(hi-lo, func(a, b int64, h hash.Hash) { s.hashRange(lo+a, lo+b, h) })
	return digestMeta(meta, block, crcs)
}

// zeroChunk is a chunk of zeros; never written.
var zeroChunk [ChunkSize]byte

// zeroReader is an io.ReaderAt of zeros, for the shared hole segment.
type zeroReader struct{}

func (zeroReader) ReadAt(b []byte, _ int64) (int, error) { clear(b); return len(b), nil }

func zeroHash(h hash.Hash, n int64) {
	for n > 0 {
		l := min(n, ChunkSize)
		h.Write(zeroChunk[:l])
		n -= l
	}
}

// maxZeroMD5 bounds the objects whose content isZeros checks by computing
// the MD5 of that many zeros (once per size), except imagefs' own hole
// segments, which are recognised by name first.
const maxZeroMD5 = 4 << 20

var zeroMD5s sync.Map // size -> hex MD5 of that many zeros

// zeroMD5 is the hex MD5 of n zero bytes (cached: a handful of sizes recur).
func zeroMD5(n int64) string {
	if v, ok := zeroMD5s.Load(n); ok {
		return v.(string)
	}
	h := md5.New()
	zeroHash(h, n)
	s := hex.EncodeToString(h.Sum(nil))
	zeroMD5s.Store(n, s)
	return s
}

// isZeros reports whether a segment object holds only zeros, judged by its
// ETag (the MD5 Swift computed): imagefs' hole segments, and blocks of
// zeros that tools such as qemu-img write.
func isZeros(s Segment) bool {
	if s.Size <= 0 || s.ETag == "" {
		return false
	}
	if s.Size > maxZeroMD5 && !strings.HasSuffix(s.Object, "/"+zeroSegment) {
		return false
	}
	return s.ETag == zeroMD5(s.Size)
}

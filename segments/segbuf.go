package segments

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"hash"
	"io"
)

// segBuf holds the bytes of one segment while it is written. Chunks that
// were never written are nil and read as zeros, so a hole costs no memory.
type segBuf struct {
	off    int64    // object offset of the segment's first byte
	chunks [][]byte // ChunkSize each, nil = zeros
	spans  []span   // written ranges, relative to off, sorted and merged
}

type span struct{ lo, hi int64 }

// write copies p to relative offset rel, taking chunks from the pool.
func (s *segBuf) write(ctx context.Context, p *Pool, rel int64, data []byte) error {
	for len(data) > 0 {
		ci := int(rel / ChunkSize)
		for len(s.chunks) <= ci {
			s.chunks = append(s.chunks, nil)
		}
		if s.chunks[ci] == nil {
			b, err := p.alloc(ctx)
			if err != nil {
				return err
			}
			s.chunks[ci] = b
		}
		n := copy(s.chunks[ci][rel%ChunkSize:], data)
		s.addSpan(rel, rel+int64(n))
		rel += int64(n)
		data = data[n:]
	}
	return nil
}

func (s *segBuf) addSpan(lo, hi int64) {
	out := s.spans[:0:0]
	for _, sp := range s.spans {
		if sp.hi < lo || sp.lo > hi { // disjoint, not touching
			out = append(out, sp)
			continue
		}
		lo, hi = min(lo, sp.lo), max(hi, sp.hi)
	}
	out = append(out, span{lo, hi})
	// keep sorted: insertion of the merged span
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

// clip forgets everything from relative offset n on.
func (s *segBuf) clip(n int64, p *Pool) {
	for i, c := range s.chunks {
		lo := int64(i) * ChunkSize
		switch {
		case c == nil:
		case lo >= n:
			p.free(c)
			s.chunks[i] = nil
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
}

// free gives all chunks back to the pool.
func (s *segBuf) free(p *Pool) {
	for i, c := range s.chunks {
		if c != nil {
			p.free(c)
			s.chunks[i] = nil
		}
	}
}

// ReadAt implements io.ReaderAt over the first n bytes (see reader).
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

// reader returns the segment's first n bytes as a rewindable body.
func (s *segBuf) reader(n int64) io.ReadSeeker { return io.NewSectionReader(s, 0, n) }

// hashInto writes the segment's first n bytes to each hash.
func (s *segBuf) hashInto(n int64, hs ...hash.Hash) {
	for ci := int64(0); ci*ChunkSize < n; ci++ {
		l := min(ChunkSize, n-ci*ChunkSize)
		b := zeroChunk[:l]
		if int(ci) < len(s.chunks) && s.chunks[ci] != nil {
			b = s.chunks[ci][:l]
		}
		for _, h := range hs {
			h.Write(b)
		}
	}
}

// md5hex is the hex MD5 of the segment's first n bytes.
func (s *segBuf) md5hex(n int64) string {
	h := md5.New()
	s.hashInto(n, h)
	return hex.EncodeToString(h.Sum(nil))
}

// zeroChunk is a chunk of zeros; never written.
var zeroChunk [ChunkSize]byte

// zeroReader is an io.ReaderAt of zeros, for the shared hole segment.
type zeroReader struct{}

func (zeroReader) ReadAt(b []byte, _ int64) (int, error) { clear(b); return len(b), nil }

// zeroMD5 is the hex MD5 of n zero bytes.
func zeroMD5(n int64) string {
	h := md5.New()
	for n > 0 {
		l := min(n, ChunkSize)
		h.Write(zeroChunk[:l])
		n -= l
	}
	return hex.EncodeToString(h.Sum(nil))
}

package labtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/imagefs/imagefs/segments"
)

// Pattern is deterministic pseudo-random content of any size, computed
// rather than stored: tests upload gigabytes and check any range of them
// without keeping a copy on disk. Page p (1 MiB) is the ChaCha8 stream
// of (seed, p). It is an io.ReaderAt; safe for concurrent use.
type Pattern struct {
	Seed uint64
	Size int64
}

const patternPage = 1 << 20

func (p Pattern) page(i int64, buf []byte) {
	var key [32]byte
	for k := range 8 {
		key[k] = byte(p.Seed >> (8 * k))
		key[8+k] = byte(uint64(i) >> (8 * k))
	}
	r := rand.NewChaCha8(key)
	_, _ = r.Read(buf)
}

// ReadAt implements io.ReaderAt.
func (p Pattern) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.Size {
		return 0, io.EOF
	}
	n := 0
	page := make([]byte, patternPage)
	for n < len(b) && off+int64(n) < p.Size {
		pos := off + int64(n)
		i := pos / patternPage
		p.page(i, page)
		c := copy(b[n:], page[pos-i*patternPage:min(patternPage, p.Size-i*patternPage)])
		n += c
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// Bytes returns bytes [off, off+n) of the pattern (cut at its end).
func (p Pattern) Bytes(off, n int64) []byte {
	b := make([]byte, max(0, min(n, p.Size-off)))
	_, _ = p.ReadAt(b, off)
	return b
}

// SHA256 is the hex SHA-256 of the whole pattern.
func (p Pattern) SHA256() string {
	h := sha256.New()
	_, _ = io.Copy(h, p.section(0, p.Size))
	return hex.EncodeToString(h.Sum(nil))
}

// section reads bytes [off, off+n) in order, one page computed at a time.
func (p Pattern) section(off, n int64) *patternReader {
	return &patternReader{p: p, start: off, end: min(off+n, p.Size), pos: off, cur: -1}
}

type patternReader struct {
	p               Pattern
	start, end, pos int64
	page            []byte
	cur             int64 // page in page, -1 for none
}

func (r *patternReader) Read(b []byte) (int, error) {
	if r.pos >= r.end {
		return 0, io.EOF
	}
	i := r.pos / patternPage
	if i != r.cur {
		if r.page == nil {
			r.page = make([]byte, patternPage)
		}
		r.p.page(i, r.page)
		r.cur = i
	}
	lo := r.pos - i*patternPage
	hi := min(patternPage, r.end-i*patternPage)
	n := copy(b, r.page[lo:hi])
	r.pos += int64(n)
	return n, nil
}

func (r *patternReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		off += r.start
	case io.SeekCurrent:
		off += r.pos
	case io.SeekEnd:
		off += r.end
	}
	if off < r.start {
		return 0, fmt.Errorf("seek before the start")
	}
	r.pos = off
	return off - r.start, nil
}

// section returns bytes [off, off+n) of r as a ReadSeeker.
func section(r io.ReaderAt, off, n int64) io.ReadSeeker {
	if p, ok := r.(Pattern); ok {
		return p.section(off, n)
	}
	return io.NewSectionReader(r, off, n)
}

// putRange stores bytes [off, off+n) of r as one object.
func putRange(ctx context.Context, c, name string, r io.ReaderAt, off, n int64, o segments.PutOptions) (string, error) {
	return Swift.Put(ctx, c, name, section(r, off, n), n, "", o)
}

// PutPlain stores size bytes of r as a plain object.
func PutPlain(t testing.TB, c, name string, r io.ReaderAt, size int64) {
	t.Helper()
	if _, err := putRange(t.Context(), c, name, r, 0, size, segments.PutOptions{}); err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
}

// PutSLO stores size bytes of r as a static large object with segments of
// segSize bytes (the last one shorter) in c+"_segments", uploaded in
// parallel. The manifest is written directly, not by imagefs.
func PutSLO(t testing.TB, c, name string, r io.ReaderAt, size, segSize int64) {
	t.Helper()
	ctx := t.Context()
	sc := c + "_segments"
	if err := Swift.CreateContainer(ctx, sc); err != nil {
		t.Fatal(err)
	}
	n := (size + segSize - 1) / segSize
	entries := make([]segments.ManifestEntry, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range n {
		g.Go(func() error {
			off := i * segSize
			l := min(segSize, size-off)
			obj := fmt.Sprintf("%s/seg/%08d", name, i)
			etag, err := putRange(gctx, sc, obj, r, off, l, segments.PutOptions{})
			entries[i] = segments.ManifestEntry{Container: sc, Object: obj, ETag: etag, Size: l}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("put segments of %s: %v", name, err)
	}
	if _, err := Swift.PutManifest(ctx, c, name, entries, segments.PutOptions{}); err != nil {
		t.Fatalf("put manifest %s: %v", name, err)
	}
}

// PutGlanceDLO stores size bytes of r the way Glance stores a large
// image: segments "<name>-00001", "<name>-00002"... of segSize bytes in
// the same container, written with plain PUTs, then a zero-byte manifest
// with X-Object-Manifest "<c>/<name>-".
func PutGlanceDLO(t testing.TB, c, name string, r io.ReaderAt, size, segSize int64) {
	t.Helper()
	ctx := t.Context()
	n := (size + segSize - 1) / segSize
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			off := i * segSize
			_, errs[i] = putRange(ctx, c, fmt.Sprintf("%s-%05d", name, i+1), r, off, min(segSize, size-off), segments.PutOptions{})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("put segment of %s: %v", name, err)
		}
	}
	if _, err := Swift.Put(ctx, c, name, bytes.NewReader(nil), 0, "", segments.PutOptions{DLO: c + "/" + name + "-"}); err != nil {
		t.Fatalf("put DLO manifest %s: %v", name, err)
	}
}

// OpenDirect opens a file with O_DIRECT, as qemu opens images with
// cache=none: reads bypass the kernel's page cache and all reach the
// daemon. The file is closed when the test ends.
func OpenDirect(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

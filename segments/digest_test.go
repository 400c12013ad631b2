package segments_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

// flipping is a store whose GET bodies of segment objects have one byte
// flipped, for the first `times` GETs (times < 0: always).
type flipping struct {
	segments.ObjectStore
	times atomic.Int64
	gets  atomic.Int64
}

func (f *flipping) Get(ctx context.Context, c, o string, off, n int64, ifMatch string) (io.ReadCloser, error) {
	rc, err := f.ObjectStore.Get(ctx, c, o, off, n, ifMatch)
	f.gets.Add(1)
	if err != nil || !strings.HasSuffix(c, "_segments") || f.times.Add(-1) < 0 && f.times.Load() > -1<<40 {
		return rc, err
	}
	b, _ := io.ReadAll(rc)
	meta := rc.(interface{ Meta() map[string]string }).Meta()
	rc.Close()
	if len(b) > 0 {
		b[len(b)/2] ^= 0x40
	}
	return &metaBody{Reader: bytes.NewReader(b), meta: meta}, nil
}

type metaBody struct {
	*bytes.Reader
	meta map[string]string
}

func (b *metaBody) Close() error            { return nil }
func (b *metaBody) Meta() map[string]string { return b.meta }

// TestVerifiedReads: bytes imagefs wrote are checked block by block as
// they are read, at any offset and length: a byte flipped once on the way
// is fetched again and the read is right; one flipped every time fails
// with ErrCorrupt and no byte of the bad block reaches the caller.
func TestVerifiedReads(t *testing.T) {
	st := newFake(t)
	data := randBytes(5*mib+12345, 21)
	w := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2)})
	writeAll(t, w, data, mib)
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	m, _, err := segments.Resolve(t.Context(), st, "c", "f")
	if err != nil {
		t.Fatal(err)
	}
	fs := &flipping{ObjectStore: st}
	rd := segments.NewReader(fs, m, segments.ReaderOptions{})
	for _, rg := range [][2]int64{{0, 4096}, {1000, 300000}, {mib - 10, 20}, {3*mib + 7, 2 * mib}, {5 * mib, 12345}} {
		fs.times.Store(1) // once: fetched again
		buf := make([]byte, rg[1])
		if _, err := rd.ReadAt(t.Context(), buf, rg[0]); err != nil || !bytes.Equal(buf, data[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("read %v with one flipped GET: %v (equal %v)", rg, err, bytes.Equal(buf, data[rg[0]:rg[0]+rg[1]]))
		}
	}
	fs.times.Store(-1 << 50) // always
	sw := &countingWriter{}
	_, err = rd.CopyRange(t.Context(), sw, 0, 2*mib)
	if !errors.Is(err, segments.ErrCorrupt) {
		t.Fatalf("read with every GET flipped: %v, want ErrCorrupt", err)
	}
	// The flip is in the middle of the first GET's body: the blocks
	// before it pass, the flipped block and what follows do not.
	if sw.n >= 1<<20 || !bytes.Equal(sw.b.Bytes(), data[:sw.n]) {
		t.Errorf("%d bytes reached the caller before the error; they must all be good and stop before the flip", sw.n)
	}
}

type countingWriter struct {
	b bytes.Buffer
	n int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.b.Write(p)
}

// TestVerifiedReadOfForeignSegment: a small segment written by another
// tool (no block digests) read whole is checked against the MD5 its
// manifest records.
func TestVerifiedReadOfForeignSegment(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	if err := st.CreateContainer(ctx, "c_segments"); err != nil {
		t.Fatal(err)
	}
	part := randBytes(100_000, 22)
	if _, err := st.Put(ctx, "c_segments", "other/tool/0001", bytes.NewReader(part), int64(len(part)), "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutManifest(ctx, "c", "g", []segments.ManifestEntry{{Container: "c_segments", Object: "other/tool/0001"}}, segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	m, _, err := segments.Resolve(ctx, st, "c", "g")
	if err != nil {
		t.Fatal(err)
	}
	fs := &flipping{ObjectStore: st}
	fs.times.Store(-1 << 50)
	buf := make([]byte, len(part))
	if _, err := segments.NewReader(fs, m, segments.ReaderOptions{}).ReadAt(ctx, buf, 0); !errors.Is(err, segments.ErrCorrupt) {
		t.Fatalf("read of a flipped foreign segment: %v, want ErrCorrupt", err)
	}
}

// BenchmarkVerifiedRead: the Reader's cost per byte for an image imagefs
// wrote (checked block by block) and for the same bytes without digests
// (as other tools write them), over the in-memory store.
func BenchmarkVerifiedRead(b *testing.B) {
	for _, digests := range []bool{true, false} {
		name := "with-digests"
		if !digests {
			name = "without"
		}
		b.Run(name, func(b *testing.B) {
			st := segmentstest.New()
			ctx := context.Background()
			_ = st.CreateContainer(ctx, "c")
			_ = st.CreateContainer(ctx, "c_segments")
			data := randBytes(32*mib, 1)
			obj := "img/20261201T000000Z-000000000000/00000000" // an imagefs segment name
			meta := map[string]string{}
			if digests {
				meta = segments.DigestMetaForTest(data)
			} else {
				obj = "img/seg/00000000"
			}
			if _, err := st.Put(ctx, "c_segments", obj, bytes.NewReader(data), int64(len(data)), "", segments.PutOptions{Meta: meta}); err != nil {
				b.Fatal(err)
			}
			m := segments.NewManifest([]segments.Segment{{Container: "c_segments", Object: obj, Length: int64(len(data)), Size: int64(len(data))}}, "")
			rd := segments.NewReader(st, m, segments.ReaderOptions{})
			buf := make([]byte, 8*mib)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				off := int64(i%4) * int64(len(buf))
				if _, err := rd.ReadAt(ctx, buf, off); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

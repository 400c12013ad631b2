package segments_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

const mib = 1 << 20

func newFake(t *testing.T) *segmentstest.Store {
	t.Helper()
	st := segmentstest.New()
	if err := st.CreateContainer(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	return st
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readBack resolves the object and reads it whole through a Reader.
func readBack(t *testing.T, st segments.ObjectStore, name string) ([]byte, segments.Info) {
	t.Helper()
	m, in, err := segments.Resolve(t.Context(), st, "c", name)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	r := segments.NewReader(st, m, segments.ReaderOptions{})
	buf := make([]byte, m.Size())
	n, err := r.ReadAt(t.Context(), buf, 0)
	if err != nil || n != len(buf) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	return buf, in
}

func writeAll(t *testing.T, w *segments.Writer, data []byte, step int) {
	t.Helper()
	for off := 0; off < len(data); off += step {
		end := min(off+step, len(data))
		if _, err := w.WriteAt(t.Context(), data[off:end], int64(off)); err != nil {
			t.Fatalf("WriteAt(%d): %v", off, err)
		}
	}
}

func TestWriterRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		size     int
		slo      bool
		segments int
	}{
		{"empty", 0, false, 0},
		{"small", 1000, false, 0},
		{"exactly one segment", 2 * mib, false, 0},
		{"one byte more", 2*mib + 1, true, 2},
		{"several segments", 7*mib + 12345, true, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newFake(t)
			pool := segments.NewPool(2*mib, 2)
			w := segments.NewWriter(t.Context(), st, "dir/f.img", segments.WriterOptions{Container: "c", Pool: pool})
			data := randBytes(tc.size, 1)
			writeAll(t, w, data, 128<<10)
			if err := w.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(t.Context()); err != nil {
				t.Fatalf("second Commit: %v", err)
			}
			got, in := readBack(t, st, "dir/f.img")
			if !bytes.Equal(got, data) {
				t.Fatal("content differs")
			}
			if in.SLO != tc.slo {
				t.Errorf("SLO = %v, want %v", in.SLO, tc.slo)
			}
			sum := sha256.Sum256(data)
			if in.Meta[segments.MetaSHA256] != hex.EncodeToString(sum[:]) {
				t.Errorf("sha256 meta = %q", in.Meta[segments.MetaSHA256])
			}
			if in.Meta[segments.MetaMtime] == "" {
				t.Error("no mtime")
			}
			if n := len(st.Names("c_segments")); n != tc.segments {
				t.Errorf("%d segment objects, want %d", n, tc.segments)
			}
		})
	}
}

// TestWriterNoSHA256: with NoSHA256 neither a small file nor a segmented
// one gets sha256 metadata, and their content is unchanged.
func TestWriterNoSHA256(t *testing.T) {
	for _, size := range []int{1000, 7*mib + 12345} {
		st := newFake(t)
		w := segments.NewWriter(t.Context(), st, "f.img", segments.WriterOptions{Container: "c", Pool: segments.NewPool(2*mib, 2), Sums: segments.Sums{NoSHA256: true}})
		data := randBytes(size, 2)
		writeAll(t, w, data, 128<<10)
		if err := w.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		got, in := readBack(t, st, "f.img")
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: content differs", size)
		}
		if v, ok := in.Meta[segments.MetaSHA256]; ok {
			t.Errorf("%d bytes: sha256 meta %q with NoSHA256", size, v)
		}
		if in.Meta[segments.MetaMtime] == "" {
			t.Errorf("%d bytes: no mtime", size)
		}
	}
}

// TestWriterSums: each whole-file digest is stored exactly when it is
// chosen, and equals the digest of the content, holes included, for a
// small file and for a segmented one written through a pool that has
// memory for two segments only (every lane must give the buffers back).
func TestWriterSums(t *testing.T) {
	digests := func(b []byte) map[string]string {
		s256, s512, m5 := sha256.Sum256(b), sha512.Sum512(b), md5.Sum(b)
		return map[string]string{segments.MetaSHA256: hex.EncodeToString(s256[:]),
			segments.MetaMD5: hex.EncodeToString(m5[:]), segments.MetaSHA512: hex.EncodeToString(s512[:])}
	}
	for _, sums := range []segments.Sums{{}, {MD5: true, SHA512: true}, {NoSHA256: true, MD5: true}, {NoSHA256: true, SHA512: true}, {NoSHA256: true}} {
		chosen := map[string]bool{segments.MetaSHA256: !sums.NoSHA256, segments.MetaMD5: sums.MD5, segments.MetaSHA512: sums.SHA512}
		for _, size := range []int{1000, 9*mib + 12345} {
			st := newFake(t)
			w := segments.NewWriter(t.Context(), st, "f.img", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 1), Sums: sums})
			data := randBytes(size, 3)
			if size > mib {
				clear(data[2*mib+5 : 5*mib+7]) // a hole: written past, never written
				writeAll(t, w, data[:2*mib+5], 100<<10)
				if _, err := w.WriteAt(t.Context(), data[5*mib+7:], 5*mib+7); err != nil {
					t.Fatal(err)
				}
			} else {
				writeAll(t, w, data, 100)
			}
			if err := w.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
			got, in := readBack(t, st, "f.img")
			if !bytes.Equal(got, data) {
				t.Fatalf("%+v, %d bytes: content differs", sums, size)
			}
			for key, want := range digests(data) {
				if v, ok := in.Meta[key]; chosen[key] && v != want || !chosen[key] && ok {
					t.Errorf("%+v, %d bytes: %s metadata %q (chosen %v), want %q", sums, size, key, v, chosen[key], want)
				}
			}
		}
	}
}

func TestWriterOutOfOrderAndSparse(t *testing.T) {
	st := newFake(t)
	pool := segments.NewPool(mib, 2)
	w := segments.NewWriter(t.Context(), st, "sparse", segments.WriterOptions{Container: "c", Pool: pool})
	size := 10 * mib
	want := make([]byte, size)
	put := func(off int, b []byte) {
		t.Helper()
		copy(want[off:], b)
		if _, err := w.WriteAt(t.Context(), b, int64(off)); err != nil {
			t.Fatalf("WriteAt(%d): %v", off, err)
		}
	}
	a := randBytes(300<<10, 2)
	put(0, a[:100<<10])
	put(200<<10, a[200<<10:]) // ahead of the end: a gap for now
	put(100<<10, a[100<<10:200<<10])
	put(6*mib+5, []byte("hello")) // a hole of several segments
	if err := w.Truncate(t.Context(), int64(size)); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, _ := readBack(t, st, "sparse")
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	// Holes cost one zero segment, not one upload each.
	if n := len(st.Names("c_segments")); n > 4 {
		t.Errorf("%d segment objects for a mostly empty file: %v", n, st.Names("c_segments"))
	}
}

// TestWriterBackwardWriteSpoils: without staging, a write into uploaded
// data fails with ErrNonSequential and spoils the upload: Commit fails too,
// publishes nothing and deletes the segments.
func TestWriterBackwardWriteSpoils(t *testing.T) {
	st := newFake(t)
	w := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2)})
	writeAll(t, w, randBytes(5*mib, 9), 256<<10)
	if _, err := w.WriteAt(t.Context(), []byte("x"), 10); !errors.Is(err, segments.ErrNonSequential) {
		t.Fatalf("backward write: %v, want ErrNonSequential", err)
	}
	if _, err := w.WriteAt(t.Context(), []byte("y"), 5*mib); !errors.Is(err, segments.ErrNonSequential) {
		t.Errorf("next write: %v, want the sticky ErrNonSequential", err)
	}
	if err := w.Commit(t.Context()); !errors.Is(err, segments.ErrNonSequential) {
		t.Fatalf("Commit = %v, want ErrNonSequential", err)
	}
	if _, err := st.Head(t.Context(), "c", "f"); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("a spoiled upload was published: %v", err)
	}
	if n := st.Names("c_segments"); len(n) != 0 {
		t.Errorf("left behind: %v", n)
	}
}

func TestWriterNestedManifests(t *testing.T) {
	st := newFake(t)
	st.SetLimits(segments.Limits{MaxManifestSegments: 3, MaxFileSize: 5 << 30, SLO: true})
	pool := segments.NewPool(mib, 2)
	w := segments.NewWriter(t.Context(), st, "big", segments.WriterOptions{Container: "c", Pool: pool, MaxSegments: 3})
	data := randBytes(11*mib+7, 3) // 12 segments: 4 sub-manifests, then 2
	writeAll(t, w, data, mib)
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, _ := readBack(t, st, "big")
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	// Remove, then a reap, deletes everything, sub-manifests included.
	v := segments.NewVersions(st, segments.VersionsOptions{Container: "c"})
	in, err := st.Head(t.Context(), "c", "big")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Remove(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Reap(t.Context(), segments.ReapOptions{Delete: true}); err != nil {
		t.Fatal(err)
	}
	if n := st.Names("c_segments"); len(n) != 0 {
		t.Errorf("left behind: %v", n)
	}
}

func TestWriterUploadFailure(t *testing.T) {
	st := newFake(t)
	w0 := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 1)})
	old := randBytes(3*mib, 4)
	writeAll(t, w0, old, mib)
	if err := w0.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	st.SetHook(func(op, c, o string) error {
		if op == "PUT" && strings.HasSuffix(o, "/00000002") {
			return boom
		}
		return nil
	})
	w := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 1)})
	data := randBytes(5*mib, 5)
	var werr error
	for off := 0; off < len(data) && werr == nil; off += mib {
		_, werr = w.WriteAt(t.Context(), data[off:off+mib], int64(off))
	}
	cerr := w.Commit(t.Context())
	if !errors.Is(cerr, boom) {
		t.Fatalf("Commit = %v, want boom", cerr)
	}
	st.SetHook(nil)
	got, _ := readBack(t, st, "f")
	if !bytes.Equal(got, old) {
		t.Fatal("old version damaged")
	}
	for _, n := range st.Names("c_segments") {
		if strings.HasPrefix(n, w.SegmentPrefix()) {
			t.Errorf("failed upload left %s", n)
		}
	}
}

// TestWriterOverwriteRetiresOldVersion: an overwrite keeps the old
// version's segments (a reader elsewhere may have it open) and records
// their retirement; a reap once the grace period is over deletes them and
// nothing of the new version.
func TestWriterOverwriteRetiresOldVersion(t *testing.T) {
	st := newFake(t)
	pool := segments.NewPool(mib, 2)
	now := time.Now()
	v := segments.NewVersions(st, segments.VersionsOptions{Container: "c", Grace: time.Hour, Now: func() time.Time { return now }})
	var prev, last string
	for i := range 2 {
		w := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: pool, Versions: v})
		writeAll(t, w, randBytes(3*mib, uint64(i)), mib)
		if err := w.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		prev, last = last, w.SegmentPrefix()
	}
	count := func(prefix string) int {
		n := 0
		for _, name := range st.Names("c_segments") {
			if strings.HasPrefix(name, prefix) {
				n++
			}
		}
		return n
	}
	if count(prev) != 3 {
		t.Fatalf("the old version lost segments at once: %d left", count(prev))
	}
	rep, err := v.Reap(t.Context(), segments.ReapOptions{MinAge: time.Hour, Delete: true})
	if err != nil || rep.Deleted != 0 || rep.Due != 0 || rep.Records != 1 {
		t.Fatalf("reap within the grace period: %+v, %v", rep, err)
	}
	now = now.Add(2 * time.Hour) // the leases of the writers are stale too
	rep, err = v.Reap(t.Context(), segments.ReapOptions{MinAge: time.Hour, Delete: true})
	if err != nil || rep.Deleted != 3 || rep.Done != 1 {
		t.Fatalf("reap after the grace period: %+v, %v", rep, err)
	}
	if count(prev) != 0 || count(last) != 3 {
		t.Errorf("after the reap: %d old, %d new segments", count(prev), count(last))
	}
}

func TestWriterAbort(t *testing.T) {
	st := newFake(t)
	w := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2)})
	writeAll(t, w, randBytes(4*mib, 6), mib)
	w.Abort(context.Background())
	if n := st.Names("c_segments"); len(n) != 0 {
		t.Errorf("abort left %v", n)
	}
	if _, err := st.Head(t.Context(), "c", "f"); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("aborted file visible: %v", err)
	}
}

func TestReaderResumes(t *testing.T) {
	st := newFake(t)
	data := randBytes(3*mib, 7)
	if _, err := st.Put(t.Context(), "c", "o", bytes.NewReader(data), int64(len(data)), "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	m, _, err := segments.Resolve(t.Context(), st, "c", "o")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &cutStore{ObjectStore: st, cutAfter: 100 << 10, times: 3}
	r := segments.NewReader(flaky, m, segments.ReaderOptions{Retry: segments.RetryPolicy{Base: 1, Cap: 1, Budget: 1 << 40}})
	buf := make([]byte, 2*mib)
	if _, err := r.ReadAt(t.Context(), buf, 500); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data[500:500+2*mib]) {
		t.Fatal("content differs")
	}
	if flaky.gets != 4 {
		t.Errorf("%d GETs, want 4 (3 broken + 1 resumed)", flaky.gets)
	}
}

// cutStore breaks the first `times` GET bodies after cutAfter bytes.
type cutStore struct {
	segments.ObjectStore
	cutAfter int64
	times    int
	gets     int
}

func (c *cutStore) Get(ctx context.Context, cn, o string, off, n int64, ifMatch string) (io.ReadCloser, error) {
	c.gets++
	rc, err := c.ObjectStore.Get(ctx, cn, o, off, n, ifMatch)
	if err != nil || c.times == 0 {
		return rc, err
	}
	c.times--
	return io.NopCloser(io.MultiReader(io.LimitReader(rc, c.cutAfter),
		errReader{&segments.TransportError{Err: io.ErrUnexpectedEOF}})), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestReaderStaleAfterOverwrite(t *testing.T) {
	st := newFake(t)
	put := func(b []byte) {
		if _, err := st.Put(t.Context(), "c", "o", bytes.NewReader(b), int64(len(b)), "", segments.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put([]byte("version one"))
	m, _, err := segments.Resolve(t.Context(), st, "c", "o")
	if err != nil {
		t.Fatal(err)
	}
	put([]byte("version two"))
	r := segments.NewReader(st, m, segments.ReaderOptions{})
	_, err = r.ReadAt(t.Context(), make([]byte, 5), 0)
	if !errors.Is(err, segments.ErrStale) {
		t.Fatalf("err = %v, want ErrStale", err)
	}
}

func TestManifestLocate(t *testing.T) {
	m := segments.NewManifest([]segments.Segment{{Length: 10}, {Length: 5}, {Length: 1}}, "v")
	for _, tc := range []struct {
		off   int64
		i     int
		inner int64
		ok    bool
	}{{0, 0, 0, true}, {9, 0, 9, true}, {10, 1, 0, true}, {14, 1, 4, true}, {15, 2, 0, true}, {16, 0, 0, false}, {-1, 0, 0, false}} {
		i, inner, ok := m.Locate(tc.off)
		if i != tc.i || inner != tc.inner || ok != tc.ok {
			t.Errorf("Locate(%d) = %d,%d,%v want %d,%d,%v", tc.off, i, inner, ok, tc.i, tc.inner, tc.ok)
		}
	}
}

// TestWriterTwoTiB: a 2 TiB file with the default settings (32 MiB
// segments, 1000 entries per manifest) has 65536 parts, more than one
// manifest takes: it is stored as nested manifests that Swift (here the
// fake, which enforces the limit) accepts, and it resolves to 2 TiB with
// the data where it was written. The file is sparse, so that the test
// uploads megabytes, not terabytes; holes and data segments count alike.
func TestWriterTwoTiB(t *testing.T) {
	st := newFake(t)
	pool := segments.NewPool(32*mib, 4)
	w := segments.NewWriter(t.Context(), st, "huge.img", segments.WriterOptions{Container: "c", Pool: pool, MaxSegments: 1000})
	const size = 2 << 40
	head, tail := randBytes(mib, 10), randBytes(mib, 11)
	if _, err := w.WriteAt(t.Context(), head, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(t.Context(), tail, size-mib); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	top, err := st.GetManifest(t.Context(), "c", "huge.img")
	if err != nil {
		t.Fatal(err)
	}
	// 65536 segments, plus one zero part after the 1 MiB of data in the
	// first and one before it in the last: 66 sub-manifests of <= 1000.
	if len(top) != 66 {
		t.Errorf("top manifest has %d entries, want 66", len(top))
	}
	for _, e := range top {
		if !e.SubSLO {
			t.Fatalf("top entry %s is not a sub-manifest", e.Object)
		}
	}
	m, in, err := segments.Resolve(t.Context(), st, "c", "huge.img")
	if err != nil {
		t.Fatal(err)
	}
	if m.Size() != size || in.Size != size || len(m.Segments) != 65538 {
		t.Fatalf("resolved: %d bytes in %d segments (HEAD says %d)", m.Size(), len(m.Segments), in.Size)
	}
	// 2 TiB of holes exceed what is worth hashing (64 GiB by default): no
	// sha256 rather than close(2) waiting for half an hour.
	if in.Meta[segments.MetaSHA256] != "" {
		t.Errorf("sha256 %q for a 2 TiB sparse file", in.Meta[segments.MetaSHA256])
	}
	r := segments.NewReader(st, m, segments.ReaderOptions{})
	buf := make([]byte, mib)
	for _, c := range []struct {
		off  int64
		want []byte
	}{{0, head}, {size - mib, tail}, {size / 2, make([]byte, mib)}} {
		if _, err := r.ReadAt(t.Context(), buf, c.off); err != nil || !bytes.Equal(buf, c.want) {
			t.Errorf("read at %d: %v", c.off, err)
		}
	}
}

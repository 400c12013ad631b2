package segmentstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imagefs/imagefs/segments"
)

// RunStoreTests runs the ObjectStore contract against a store: the
// behaviour segments relies on, as real Swift shows it. newStore returns
// the store and an empty container that exists, fresh for each subtest
// (it may be called in parallel subtests); the contract uses only that
// container and its "_segments" sibling (which CreateContainer makes), so
// a harness that removes both when the test ends leaves nothing behind.
//
// Real Swift is the reference: where a store differs, the store is
// wrong. The comments marked "Swift:" record behaviour of real Swift
// (2.30, the lab's) that one might not expect.
func RunStoreTests(t *testing.T, newStore func(t *testing.T) (st segments.ObjectStore, container string)) {
	for _, tc := range contract {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, c := newStore(t)
			tc.run(t, st, c)
		})
	}
}

// contract lists the subtests of RunStoreTests, each with what it checks.
var contract = []struct {
	name string
	run  func(t *testing.T, st segments.ObjectStore, c string)
}{
	// Put without an MD5 returns the MD5 Swift computed; Head agrees.
	{"Put/NoMD5", testPutNoMD5},
	// Put with the right MD5 stores the object and returns that MD5.
	{"Put/MD5", testPutMD5},
	// Put with a wrong MD5 is a 422 and stores nothing (nor replaces
	// what was there).
	{"Put/WrongMD5", testPutWrongMD5},
	// An empty object: size 0, the MD5 of nothing, reads as nothing.
	{"Put/Empty", testPutEmpty},
	// A body shorter than the size given fails and stores nothing.
	{"Put/ShortBody", testPutShortBody},
	// Put's metadata comes back, keys in lower case without the
	// X-Object-Meta- prefix ("_" as "-"), values trimmed, in Head's
	// Info.Meta and in Get's body Meta() (whole and ranged reads); a
	// second Put replaces all of it.
	{"Put/Meta", testPutMeta},
	// Content types: the one given is kept; without one, Swift guesses
	// from the name's extension, else application/octet-stream.
	{"Put/ContentType", testPutContentType},
	// Put into a container that does not exist: ErrNotFound.
	{"Put/MissingContainer", testPutMissingContainer},

	// Get of ranges [off, off+n): whole, middle, to the end (n < 0),
	// zero length, a range that runs past the end (cut at the end), and
	// ranges that start at or past the end (416, even [0, n) of an empty
	// object).
	{"Get/Ranges", testGetRanges},
	// Get of a missing object: ErrNotFound.
	{"Get/Missing", testGetMissing},
	// If-Match: the current ETag reads; another one, or the ETag of a
	// version that was overwritten, is ErrStale; a deleted object with
	// If-Match is ErrStale (and ErrNotFound).
	{"Get/IfMatch", testGetIfMatch},

	// Head of a plain object: size, ETag, content type, time, no SLO or
	// DLO; of a missing one: ErrNotFound.
	{"Head/Plain", testHeadPlain},
	// Head of an SLO manifest: SLO set, the size of the whole large
	// object, the manifest's ETag and metadata.
	{"Head/SLO", testHeadSLO},
	// Head of a DLO manifest: DLO is the X-Object-Manifest value, the
	// size and ETag are those of the concatenated segments.
	{"Head/DLO", testHeadDLO},

	// PutManifest then GetManifest gives back the entries, with ETags
	// and sizes filled in where they were left empty; the large object
	// reads as its segments' bytes.
	{"Manifest/RoundTrip", testManifestRoundTrip},
	// Entries with ranges: GetManifest returns them (one of a whole
	// segment dropped, one past the end cut), the large object reads as
	// the ranges' bytes, its ETag covers the ranges.
	{"Manifest/Ranges", testManifestRanges},
	// A manifest of manifests: the nested entry is SubSLO with the whole
	// size of the nested large object, and the content nests.
	{"Manifest/Nested", testManifestNested},
	// Manifests Swift refuses (400, nothing stored): a missing segment,
	// a wrong ETag, a wrong size, a range that starts past the segment's
	// end, an empty segment before the last.
	{"Manifest/Invalid", testManifestInvalid},
	// A manifest may end with an empty segment, or have no entries: an
	// empty large object, with the MD5 of nothing as its ETag.
	{"Manifest/Empty", testManifestEmpty},
	// More entries than Limits' MaxManifestSegments: refused, nothing
	// stored.
	{"Manifest/TooManySegments", testManifestTooMany},
	// GetManifest of a missing object is ErrNotFound, of a plain object
	// an error of another kind.
	{"Manifest/NotAManifest", testGetManifestNotManifest},
	// Deleting a manifest leaves its segments.
	{"Manifest/DeleteKeepsSegments", testManifestDeleteKeepsSegments},

	// Copy of a plain object: same bytes, ETag, content type and
	// metadata; the copy is an object of its own; names with spaces and
	// non-ASCII letters; a missing source is ErrNotFound.
	{"Copy/Plain", testCopyPlain},
	// Copy of an SLO copies the manifest: the copy is a manifest
	// referencing the same segments, with the same ETag and metadata.
	{"Copy/SLO", testCopySLO},
	// Copy of a DLO copies the manifest: the copy is a DLO with the same
	// X-Object-Manifest.
	{"Copy/DLO", testCopyDLO},

	// Delete removes an object; a missing one is not an error.
	{"Delete", testDelete},
	// DeleteMany removes the objects named (names with spaces, percent
	// signs, non-ASCII letters), missing ones are not an error, the
	// others stay; an empty list does nothing.
	{"DeleteMany", testDeleteMany},

	// List with a prefix: only names under it, in byte order, with size,
	// ETag, content type and time (no metadata).
	{"List/Prefix", testListPrefix},
	// List with a delimiter: names that go on past the delimiter fold
	// into Subdir entries, sorted among the names.
	{"List/Delimiter", testListDelimiter},
	// Listing entries of manifests: an SLO with its whole size (and not
	// its ETag), a DLO manifest as the object it is.
	{"List/Manifests", testListManifests},
	// More than one page (1000 names): every name once, in order.
	{"List/Pages", testListPages},
	// The callback's error stops the listing and is returned.
	{"List/CallbackError", testListCallbackError},
	// An empty container lists nothing.
	{"List/Empty", testListEmpty},

	// HeadContainer of the container works; CreateContainer is
	// idempotent; a missing container is ErrNotFound for HeadContainer,
	// List, Head and Get.
	{"Container", testContainer},
	// The account listing shows the containers under a prefix, in name
	// order, a new one included; the callback's error stops it.
	{"ListContainers", testListContainers},
	// HeadAccount answers with counts that make sense (at least the
	// test's container; Swift's may lag behind the writes).
	{"Account", testAccount},
	// Limits are sane: SLO present, room for nesting, sizes positive.
	{"Limits", testLimits},
	// A cancelled context stops a call with context.Canceled.
	{"Canceled", testCanceled},
}

// payload is n bytes of a pattern that differs with seed.
func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

func put(t *testing.T, st segments.ObjectStore, c, name string, data []byte, o segments.PutOptions) string {
	t.Helper()
	etag, err := st.Put(t.Context(), c, name, bytes.NewReader(data), int64(len(data)), "", o)
	if err != nil {
		t.Fatalf("Put %s: %v", name, err)
	}
	return etag
}

func putManifest(t *testing.T, st segments.ObjectStore, c, name string, es []segments.ManifestEntry, o segments.PutOptions) string {
	t.Helper()
	etag, err := st.PutManifest(t.Context(), c, name, es, o)
	if err != nil {
		t.Fatalf("PutManifest %s: %v", name, err)
	}
	return etag
}

func head(t *testing.T, st segments.ObjectStore, c, name string) segments.Info {
	t.Helper()
	in, err := st.Head(t.Context(), c, name)
	if err != nil {
		t.Fatalf("Head %s: %v", name, err)
	}
	return in
}

// read returns bytes [off, off+n) of an object, and the metadata its body
// carries.
func read(st segments.ObjectStore, ctx context.Context, c, name string, off, n int64, ifMatch string) ([]byte, map[string]string, error) {
	rc, err := st.Get(ctx, c, name, off, n, ifMatch)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	var meta map[string]string
	if m, ok := rc.(interface{ Meta() map[string]string }); ok {
		meta = m.Meta()
	}
	return b, meta, err
}

func mustRead(t *testing.T, st segments.ObjectStore, c, name string, off, n int64) []byte {
	t.Helper()
	b, _, err := read(st, t.Context(), c, name, off, n, "")
	if err != nil {
		t.Fatalf("Get %s [%d, +%d): %v", name, off, n, err)
	}
	return b
}

// wantStatus checks that err is a StatusError with the HTTP code.
func wantStatus(t *testing.T, what string, err error, code int) {
	t.Helper()
	var se *segments.StatusError
	if !errors.As(err, &se) || se.Code != code {
		t.Errorf("%s: %v, want HTTP %d", what, err, code)
	}
}

func wantMissing(t *testing.T, st segments.ObjectStore, c, name string) {
	t.Helper()
	if in, err := st.Head(t.Context(), c, name); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("Head %s: %+v, %v; want ErrNotFound", name, in, err)
	}
}

func wantMeta(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: metadata %v, want %v", what, got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: metadata %v, want %v", what, got, want)
			return
		}
	}
}

// recent checks that a time is set and about now (the lab's clock is
// the test's; Swift keeps whole seconds in Last-Modified).
func recent(t *testing.T, what string, at time.Time) {
	t.Helper()
	if d := time.Since(at); at.IsZero() || d < -time.Minute || d > 5*time.Minute {
		t.Errorf("%s: last modified %v, not about now", what, at)
	}
}

const emptyMD5 = "d41d8cd98f00b204e9800998ecf8427e"

func testPutNoMD5(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(1000, 1)
	etag := put(t, st, c, "obj", data, segments.PutOptions{})
	if etag != md5hex(data) {
		t.Errorf("Put returned ETag %q, want the MD5 %s", etag, md5hex(data))
	}
	if in := head(t, st, c, "obj"); in.ETag != etag || in.Size != int64(len(data)) {
		t.Errorf("Head: ETag %q size %d, want %q %d", in.ETag, in.Size, etag, len(data))
	}
	if got := mustRead(t, st, c, "obj", 0, -1); !bytes.Equal(got, data) {
		t.Errorf("Get: %d bytes, not what was put", len(got))
	}
}

func testPutMD5(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(777, 2)
	sum := md5hex(data)
	etag, err := st.Put(t.Context(), c, "obj", bytes.NewReader(data), int64(len(data)), sum, segments.PutOptions{})
	if err != nil || etag != sum {
		t.Fatalf("Put with its MD5: %q, %v", etag, err)
	}
	if in := head(t, st, c, "obj"); in.ETag != sum {
		t.Errorf("Head: ETag %q, want %s", in.ETag, sum)
	}
}

func testPutWrongMD5(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(500, 3)
	wrong := md5hex([]byte("something else"))
	_, err := st.Put(t.Context(), c, "new", bytes.NewReader(data), int64(len(data)), wrong, segments.PutOptions{})
	wantStatus(t, "Put with a wrong MD5", err, 422)
	wantMissing(t, st, c, "new")

	old := put(t, st, c, "old", []byte("old content"), segments.PutOptions{})
	_, err = st.Put(t.Context(), c, "old", bytes.NewReader(data), int64(len(data)), wrong, segments.PutOptions{})
	wantStatus(t, "Put over an object with a wrong MD5", err, 422)
	if in := head(t, st, c, "old"); in.ETag != old {
		t.Errorf("the refused Put replaced the object: ETag %q, was %q", in.ETag, old)
	}
}

func testPutEmpty(t *testing.T, st segments.ObjectStore, c string) {
	etag := put(t, st, c, "empty", nil, segments.PutOptions{})
	if etag != emptyMD5 {
		t.Errorf("Put of nothing: ETag %q", etag)
	}
	if in := head(t, st, c, "empty"); in.Size != 0 || in.ETag != emptyMD5 {
		t.Errorf("Head: %+v", in)
	}
	if got := mustRead(t, st, c, "empty", 0, -1); len(got) != 0 {
		t.Errorf("Get: %d bytes", len(got))
	}
}

func testPutShortBody(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(100, 4)
	_, err := st.Put(t.Context(), c, "short", bytes.NewReader(data), 200, "", segments.PutOptions{})
	if err == nil {
		t.Error("Put of 100 bytes as 200 did not fail")
	}
	wantMissing(t, st, c, "short")
}

func testPutMeta(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(300, 5)
	// Swift: "_" in a key comes back as "-" (WSGI turns both into "_"),
	// values lose surrounding white space, empty values are kept.
	put(t, st, c, "obj", data, segments.PutOptions{Meta: map[string]string{"MTime": "1700000000.5", "sha256": "abc",
		"imagefs-upload": "u1", "under_score": "1", "spaced": "  a b  ", "empty": "", "utf": "é"}})
	want := map[string]string{"mtime": "1700000000.5", "sha256": "abc", "imagefs-upload": "u1", "under-score": "1",
		"spaced": "a b", "empty": "", "utf": "é"}
	wantMeta(t, "Head", head(t, st, c, "obj").Meta, want)
	for _, r := range [][2]int64{{0, -1}, {10, 20}, {250, -1}} {
		_, meta, err := read(st, t.Context(), c, "obj", r[0], r[1], "")
		if err != nil {
			t.Fatalf("Get [%d, +%d): %v", r[0], r[1], err)
		}
		wantMeta(t, fmt.Sprintf("Get [%d, +%d) body Meta()", r[0], r[1]), meta, want)
	}
	// A Put replaces the metadata as a whole.
	put(t, st, c, "obj", data, segments.PutOptions{Meta: map[string]string{"other": "x"}})
	wantMeta(t, "Head after a second Put", head(t, st, c, "obj").Meta, map[string]string{"other": "x"})
	put(t, st, c, "obj", data, segments.PutOptions{})
	wantMeta(t, "Head after a Put without metadata", head(t, st, c, "obj").Meta, nil)
}

func testPutContentType(t *testing.T, st segments.ObjectStore, c string) {
	for _, tc := range []struct{ name, given, want string }{
		{"a.img", "application/x-raw-disk-image", "application/x-raw-disk-image"},
		{"b", "", "application/octet-stream"},
		// Swift: the proxy guesses a missing Content-Type from the name
		// (Python's mimetypes).
		{"c.html", "", "text/html"},
		{"d.HTML", "", "text/html"},
		{"dir.d/e", "", "application/octet-stream"},
	} {
		put(t, st, c, tc.name, []byte("x"), segments.PutOptions{ContentType: tc.given})
		if got := head(t, st, c, tc.name).ContentType; got != tc.want {
			t.Errorf("%s put with content type %q: Head says %q, want %q", tc.name, tc.given, got, tc.want)
		}
	}
}

func testPutMissingContainer(t *testing.T, st segments.ObjectStore, c string) {
	_, err := st.Put(t.Context(), c+"-missing", "obj", strings.NewReader("x"), 1, "", segments.PutOptions{})
	if !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("Put into a missing container: %v, want ErrNotFound", err)
	}
}

func testGetRanges(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(100, 6)
	put(t, st, c, "obj", data, segments.PutOptions{})
	for _, tc := range []struct {
		what   string
		off, n int64
		want   []byte
	}{
		{"whole", 0, -1, data},
		{"whole by length", 0, 100, data},
		{"first byte", 0, 1, data[:1]},
		{"middle", 30, 40, data[30:70]},
		{"to the end", 60, -1, data[60:]},
		{"last byte", 99, 1, data[99:]},
		{"zero length", 50, 0, nil},
		{"zero length at the end", 100, 0, nil},
		{"past the end, cut", 90, 50, data[90:]},
	} {
		got, _, err := read(st, t.Context(), c, "obj", tc.off, tc.n, "")
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("Get %s [%d, +%d): %d bytes, %v; want %d bytes", tc.what, tc.off, tc.n, len(got), err, len(tc.want))
		}
	}
	for _, r := range [][2]int64{{100, -1}, {100, 10}, {101, -1}, {150, 10}} {
		_, _, err := read(st, t.Context(), c, "obj", r[0], r[1], "")
		wantStatus(t, fmt.Sprintf("Get [%d, +%d) of 100 bytes", r[0], r[1]), err, 416)
	}
	// Swift: an empty object has no byte to start a range at: only the
	// whole read works.
	put(t, st, c, "empty", nil, segments.PutOptions{})
	_, _, err := read(st, t.Context(), c, "empty", 0, 10, "")
	wantStatus(t, "Get [0, +10) of an empty object", err, 416)
}

func testGetMissing(t *testing.T, st segments.ObjectStore, c string) {
	if _, _, err := read(st, t.Context(), c, "missing", 0, -1, ""); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("Get of a missing object: %v, want ErrNotFound", err)
	}
	if _, _, err := read(st, t.Context(), c, "missing", 5, 10, ""); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("ranged Get of a missing object: %v, want ErrNotFound", err)
	}
}

func testGetIfMatch(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(64, 7)
	etag := put(t, st, c, "obj", data, segments.PutOptions{})
	if got, _, err := read(st, t.Context(), c, "obj", 0, -1, etag); err != nil || !bytes.Equal(got, data) {
		t.Errorf("Get with If-Match of its ETag: %d bytes, %v", len(got), err)
	}
	if got, _, err := read(st, t.Context(), c, "obj", 8, 8, etag); err != nil || !bytes.Equal(got, data[8:16]) {
		t.Errorf("ranged Get with If-Match of its ETag: %d bytes, %v", len(got), err)
	}
	if _, _, err := read(st, t.Context(), c, "obj", 0, -1, md5hex([]byte("other"))); !errors.Is(err, segments.ErrStale) {
		t.Errorf("Get with If-Match of another ETag: %v, want ErrStale", err)
	}
	put(t, st, c, "obj", payload(64, 8), segments.PutOptions{})
	if _, _, err := read(st, t.Context(), c, "obj", 8, 8, etag); !errors.Is(err, segments.ErrStale) {
		t.Errorf("Get with If-Match of the overwritten version: %v, want ErrStale", err)
	}
	if err := st.Delete(t.Context(), c, "obj"); err != nil {
		t.Fatal(err)
	}
	_, _, err := read(st, t.Context(), c, "obj", 0, -1, etag)
	if !errors.Is(err, segments.ErrStale) || !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("Get with If-Match of a deleted object: %v, want ErrStale and ErrNotFound", err)
	}
}

func testHeadPlain(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(4321, 9)
	etag := put(t, st, c, "dir/obj", data, segments.PutOptions{ContentType: "application/x-qemu-disk"})
	in := head(t, st, c, "dir/obj")
	if in.Container != c || in.Name != "dir/obj" || in.Size != 4321 || in.ETag != etag ||
		in.ContentType != "application/x-qemu-disk" || in.SLO || in.DLO != "" || in.Subdir {
		t.Errorf("Head: %+v", in)
	}
	if in.Meta == nil {
		t.Error("Head: Meta is nil, want an empty map")
	}
	recent(t, "Head", in.LastModified)
	wantMissing(t, st, c, "dir/missing")
}

// slo builds n segments of the given sizes (seg-0, seg-1, ...) and an
// SLO manifest over them, and returns the entries and the whole content.
func slo(t *testing.T, st segments.ObjectStore, c, prefix string, sizes ...int) ([]segments.ManifestEntry, []byte) {
	t.Helper()
	var es []segments.ManifestEntry
	var all []byte
	for i, n := range sizes {
		data := payload(n, byte(10+i))
		name := fmt.Sprintf("%sseg-%d", prefix, i)
		etag := put(t, st, c, name, data, segments.PutOptions{})
		es = append(es, segments.ManifestEntry{Container: c, Object: name, ETag: etag, Size: int64(n)})
		all = append(all, data...)
	}
	return es, all
}

// sloETag is the ETag Swift gives an SLO: the MD5 of its entries' ETags,
// each with ":first-last;" after it if the entry has a range.
func sloETag(es []segments.ManifestEntry) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.ETag)
		if e.Length > 0 {
			fmt.Fprintf(&b, ":%d-%d;", e.Offset, e.Offset+e.Length-1)
		}
	}
	return md5hex([]byte(b.String()))
}

func testHeadSLO(t *testing.T, st segments.ObjectStore, c string) {
	es, all := slo(t, st, c, "s/", 100, 200, 50)
	meta := map[string]string{"mtime": "1", "imagefs-upload": "abc"}
	etag := putManifest(t, st, c, "big", es, segments.PutOptions{ContentType: "application/x-disk", Meta: meta})
	in := head(t, st, c, "big")
	if !in.SLO || in.DLO != "" || in.Size != int64(len(all)) || in.ETag != etag || in.ContentType != "application/x-disk" {
		t.Errorf("Head of an SLO of %d bytes (PutManifest said ETag %q): %+v", len(all), etag, in)
	}
	if etag != sloETag(es) {
		t.Errorf("SLO ETag %q, want the MD5 of the segments' ETags %s", etag, sloETag(es))
	}
	wantMeta(t, "Head of an SLO", in.Meta, meta)
	recent(t, "Head of an SLO", in.LastModified)
}

func testHeadDLO(t *testing.T, st segments.ObjectStore, c string) {
	var etags strings.Builder
	var all []byte
	for i, n := range []int{30, 70, 5} {
		data := payload(n, byte(20+i))
		etags.WriteString(put(t, st, c, fmt.Sprintf("parts/p%d", i), data, segments.PutOptions{}))
		all = append(all, data...)
	}
	put(t, st, c, "partsX", []byte("not a part"), segments.PutOptions{})
	manifest := c + "/parts/"
	put(t, st, c, "dlo", []byte("a manifest's own bytes"), segments.PutOptions{DLO: manifest, Meta: map[string]string{"k": "v"}})
	in := head(t, st, c, "dlo")
	// Swift: a DLO's HEAD gives the size of the concatenated segments and,
	// as its ETag, the MD5 of their ETags (quoted on the wire); the
	// manifest's own bytes are not seen.
	if in.DLO != manifest || in.SLO || in.Size != int64(len(all)) || in.ETag != md5hex([]byte(etags.String())) {
		t.Errorf("Head of a DLO of %d bytes: %+v", len(all), in)
	}
	wantMeta(t, "Head of a DLO", in.Meta, map[string]string{"k": "v"})
	if got := mustRead(t, st, c, "dlo", 0, -1); !bytes.Equal(got, all) {
		t.Errorf("Get of a DLO: %d bytes, want the %d of its parts", len(got), len(all))
	}
	if got := mustRead(t, st, c, "dlo", 25, 10); !bytes.Equal(got, all[25:35]) {
		t.Errorf("ranged Get of a DLO: %q", got)
	}
	// A DLO whose prefix matches nothing is empty.
	put(t, st, c, "nodlo", nil, segments.PutOptions{DLO: c + "/nothing-here/"})
	if in := head(t, st, c, "nodlo"); in.Size != 0 || in.ETag != emptyMD5 || in.DLO == "" {
		t.Errorf("Head of a DLO without parts: %+v", in)
	}
}

func wantEntries(t *testing.T, what string, got, want []segments.ManifestEntry) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func testManifestRoundTrip(t *testing.T, st segments.ObjectStore, c string) {
	es, all := slo(t, st, c, "s/", 1000, 1, 499, 2048)
	// ETag and size may be left out; Swift fills them in.
	sent := slices.Clone(es)
	sent[1].ETag, sent[2].Size = "", 0
	sent[3].ETag, sent[3].Size = "", 0
	putManifest(t, st, c, "m", sent, segments.PutOptions{})
	got, err := st.GetManifest(t.Context(), c, "m")
	if err != nil {
		t.Fatal(err)
	}
	wantEntries(t, "GetManifest", got, es)
	if b := mustRead(t, st, c, "m", 0, -1); !bytes.Equal(b, all) {
		t.Errorf("Get of the large object: %d bytes, want %d", len(b), len(all))
	}
	if b := mustRead(t, st, c, "m", 990, 20); !bytes.Equal(b, all[990:1010]) {
		t.Errorf("ranged Get across segments: %d bytes", len(b))
	}
	if b := mustRead(t, st, c, "m", 1500, -1); !bytes.Equal(b, all[1500:]) {
		t.Errorf("Get to the end: %d bytes", len(b))
	}
	// The large object is read through its manifest: If-Match takes the
	// manifest's ETag.
	etag := head(t, st, c, "m").ETag
	if b, _, err := read(st, t.Context(), c, "m", 0, 10, etag); err != nil || !bytes.Equal(b, all[:10]) {
		t.Errorf("Get of the SLO with If-Match of its ETag: %d bytes, %v", len(b), err)
	}
	if _, _, err := read(st, t.Context(), c, "m", 0, 10, es[0].ETag); !errors.Is(err, segments.ErrStale) {
		t.Errorf("Get of the SLO with If-Match of a segment's ETag: %v, want ErrStale", err)
	}
}

func testManifestRanges(t *testing.T, st segments.ObjectStore, c string) {
	es, all := slo(t, st, c, "s/", 100, 300)
	sent := []segments.ManifestEntry{
		{Container: c, Object: es[0].Object, ETag: es[0].ETag, Size: 100, Offset: 10, Length: 20},
		{Container: c, Object: es[1].Object, Offset: 0, Length: 300},
		{Container: c, Object: es[1].Object, Size: 300, Offset: 299, Length: 1},
		{Container: c, Object: es[0].Object, Offset: 90, Length: 50},
		{Container: c, Object: es[1].Object, Offset: 0, Length: 299},
		es[0],
	}
	want := slices.Clone(sent)
	for i, e := range want {
		seg := es[slices.IndexFunc(es, func(s segments.ManifestEntry) bool { return s.Object == e.Object })]
		want[i].ETag, want[i].Size = seg.ETag, seg.Size
	}
	// Swift: ranges are HTTP's. One of the whole segment is dropped; one
	// that runs past the segment's end is cut there.
	want[1].Length = 0
	want[3].Length = 10
	etag := putManifest(t, st, c, "m", sent, segments.PutOptions{})
	got, err := st.GetManifest(t.Context(), c, "m")
	if err != nil {
		t.Fatal(err)
	}
	wantEntries(t, "GetManifest", got, want)
	content := slices.Concat(all[10:30], all[100:400], all[399:400], all[90:100], all[100:399], all[:100])
	if b := mustRead(t, st, c, "m", 0, -1); !bytes.Equal(b, content) {
		t.Errorf("Get: %d bytes, want %d", len(b), len(content))
	}
	if b := mustRead(t, st, c, "m", 15, 10); !bytes.Equal(b, content[15:25]) {
		t.Errorf("ranged Get across ranges: %d bytes", len(b))
	}
	in := head(t, st, c, "m")
	if in.Size != int64(len(content)) || in.ETag != etag || etag != sloETag(want) {
		t.Errorf("Head: %+v (PutManifest said %q), want size %d, ETag %s", in, etag, len(content), sloETag(want))
	}
}

func testManifestNested(t *testing.T, st segments.ObjectStore, c string) {
	inner, innerData := slo(t, st, c, "a/", 100, 50)
	innerETag := putManifest(t, st, c, "inner", inner, segments.PutOptions{})
	tail, tailData := slo(t, st, c, "b/", 25)
	sent := []segments.ManifestEntry{{Container: c, Object: "inner", ETag: innerETag, Size: 150}, tail[0],
		{Container: c, Object: "inner", Offset: 90, Length: 20}}
	putManifest(t, st, c, "outer", sent, segments.PutOptions{})
	got, err := st.GetManifest(t.Context(), c, "outer")
	if err != nil {
		t.Fatal(err)
	}
	want := []segments.ManifestEntry{{Container: c, Object: "inner", ETag: innerETag, Size: 150, SubSLO: true}, tail[0],
		{Container: c, Object: "inner", ETag: innerETag, Size: 150, Offset: 90, Length: 20, SubSLO: true}}
	wantEntries(t, "GetManifest of a manifest of manifests", got, want)
	content := slices.Concat(innerData, tailData, innerData[90:110])
	if b := mustRead(t, st, c, "outer", 0, -1); !bytes.Equal(b, content) {
		t.Errorf("Get: %d bytes, want %d", len(b), len(content))
	}
	if b := mustRead(t, st, c, "outer", 140, 40); !bytes.Equal(b, content[140:180]) {
		t.Errorf("ranged Get across the nesting: %d bytes", len(b))
	}
	if in := head(t, st, c, "outer"); !in.SLO || in.Size != int64(len(content)) {
		t.Errorf("Head: %+v, want an SLO of %d bytes", in, len(content))
	}
}

func testManifestInvalid(t *testing.T, st segments.ObjectStore, c string) {
	es, _ := slo(t, st, c, "s/", 100, 200)
	put(t, st, c, "s/empty", nil, segments.PutOptions{})
	for _, tc := range []struct {
		what  string
		entry segments.ManifestEntry
	}{
		{"a missing segment", segments.ManifestEntry{Container: c, Object: "s/none", Size: 10}},
		{"a segment in a missing container", segments.ManifestEntry{Container: c + "-missing", Object: "s/seg-0"}},
		{"a wrong ETag", segments.ManifestEntry{Container: c, Object: es[1].Object, ETag: es[0].ETag, Size: 200}},
		{"a wrong size", segments.ManifestEntry{Container: c, Object: es[1].Object, ETag: es[1].ETag, Size: 201}},
		{"a range that starts at the end", segments.ManifestEntry{Container: c, Object: es[1].Object, Offset: 200, Length: 1}},
		// Swift: only the last segment may be empty.
		{"an empty segment that is not the last", segments.ManifestEntry{Container: c, Object: "s/empty"}},
	} {
		_, err := st.PutManifest(t.Context(), c, "m", []segments.ManifestEntry{es[0], tc.entry, es[1]}, segments.PutOptions{})
		wantStatus(t, "PutManifest with "+tc.what, err, 400)
		wantMissing(t, st, c, "m")
	}
}

func testManifestEmpty(t *testing.T, st segments.ObjectStore, c string) {
	es, all := slo(t, st, c, "s/", 10, 0)
	putManifest(t, st, c, "tail", es, segments.PutOptions{})
	if in := head(t, st, c, "tail"); in.Size != 10 || !in.SLO {
		t.Errorf("Head of an SLO ending in an empty segment: %+v", in)
	}
	if b := mustRead(t, st, c, "tail", 0, -1); !bytes.Equal(b, all) {
		t.Errorf("Get of an SLO ending in an empty segment: %q", b)
	}
	etag := putManifest(t, st, c, "none", nil, segments.PutOptions{})
	if in := head(t, st, c, "none"); etag != emptyMD5 || in.Size != 0 || !in.SLO || in.ETag != emptyMD5 {
		t.Errorf("Head of an SLO of no entries (ETag %q): %+v", etag, in)
	}
	if got, err := st.GetManifest(t.Context(), c, "none"); err != nil || len(got) != 0 {
		t.Errorf("GetManifest of no entries: %+v, %v", got, err)
	}
	if b := mustRead(t, st, c, "none", 0, -1); len(b) != 0 {
		t.Errorf("Get of an SLO of no entries: %d bytes", len(b))
	}
}

func testManifestTooMany(t *testing.T, st segments.ObjectStore, c string) {
	l, err := st.Limits(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	es, _ := slo(t, st, c, "s/", 10)
	many := make([]segments.ManifestEntry, l.MaxManifestSegments+1)
	for i := range many {
		many[i] = es[0]
	}
	_, err = st.PutManifest(t.Context(), c, "m", many, segments.PutOptions{})
	// Swift: too many segments is 413 (Request Entity Too Large), not 400.
	wantStatus(t, fmt.Sprintf("PutManifest of %d entries", len(many)), err, 413)
	wantMissing(t, st, c, "m")
}

func testGetManifestNotManifest(t *testing.T, st segments.ObjectStore, c string) {
	if _, err := st.GetManifest(t.Context(), c, "missing"); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("GetManifest of a missing object: %v, want ErrNotFound", err)
	}
	put(t, st, c, "plain", []byte("plain bytes"), segments.PutOptions{})
	// Swift: multipart-manifest=get of a plain object answers its bytes.
	if es, err := st.GetManifest(t.Context(), c, "plain"); err == nil || errors.Is(err, segments.ErrNotFound) {
		t.Errorf("GetManifest of a plain object: %+v, %v; want an error other than ErrNotFound", es, err)
	}
}

func testManifestDeleteKeepsSegments(t *testing.T, st segments.ObjectStore, c string) {
	es, all := slo(t, st, c, "s/", 10, 20)
	putManifest(t, st, c, "m", es, segments.PutOptions{})
	if err := st.Delete(t.Context(), c, "m"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, st, c, "m")
	got := slices.Concat(mustRead(t, st, c, es[0].Object, 0, -1), mustRead(t, st, c, es[1].Object, 0, -1))
	if !bytes.Equal(got, all) {
		t.Error("the segments changed when their manifest was deleted")
	}
}

func testCopyPlain(t *testing.T, st segments.ObjectStore, c string) {
	data := payload(2000, 30)
	meta := map[string]string{"mtime": "12", "sha256": "s"}
	src, dst := "dir/a b+é", "other dir/ç %20 copy"
	etag := put(t, st, c, src, data, segments.PutOptions{ContentType: "application/x-test", Meta: meta})
	put(t, st, c, dst, []byte("to be replaced"), segments.PutOptions{})
	if err := st.Copy(t.Context(), c, src, dst); err != nil {
		t.Fatal(err)
	}
	in := head(t, st, c, dst)
	if in.ETag != etag || in.Size != 2000 || in.ContentType != "application/x-test" || in.SLO {
		t.Errorf("Head of the copy: %+v", in)
	}
	wantMeta(t, "Head of the copy", in.Meta, meta)
	if got := mustRead(t, st, c, dst, 0, -1); !bytes.Equal(got, data) {
		t.Errorf("the copy has other bytes")
	}
	put(t, st, c, src, []byte("changed"), segments.PutOptions{})
	if got := mustRead(t, st, c, dst, 0, -1); !bytes.Equal(got, data) {
		t.Errorf("the copy changed with its source")
	}
	if err := st.Copy(t.Context(), c, "missing", "x"); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("Copy of a missing object: %v, want ErrNotFound", err)
	}
	wantMissing(t, st, c, "x")
}

func testCopySLO(t *testing.T, st segments.ObjectStore, c string) {
	es, all := slo(t, st, c, "s/", 100, 200)
	meta := map[string]string{"mtime": "7"}
	es = append(es, segments.ManifestEntry{Container: c, Object: es[0].Object, ETag: es[0].ETag, Size: 100, Offset: 5, Length: 5})
	all = append(all, all[5:10]...)
	etag := putManifest(t, st, c, "m", es, segments.PutOptions{ContentType: "application/x-disk", Meta: meta})
	if err := st.Copy(t.Context(), c, "m", "copy"); err != nil {
		t.Fatal(err)
	}
	in := head(t, st, c, "copy")
	if !in.SLO || in.Size != int64(len(all)) || in.ETag != etag || in.ContentType != "application/x-disk" {
		t.Errorf("Head of the copy of an SLO (ETag %q): %+v", etag, in)
	}
	wantMeta(t, "Head of the copy", in.Meta, meta)
	got, err := st.GetManifest(t.Context(), c, "copy")
	if err != nil {
		t.Fatal(err)
	}
	wantEntries(t, "GetManifest of the copy", got, es)
	if b := mustRead(t, st, c, "copy", 0, -1); !bytes.Equal(b, all) {
		t.Errorf("Get of the copy: %d bytes", len(b))
	}
}

func testCopyDLO(t *testing.T, st segments.ObjectStore, c string) {
	put(t, st, c, "parts/1", []byte("hello "), segments.PutOptions{})
	put(t, st, c, "parts/2", []byte("world"), segments.PutOptions{})
	put(t, st, c, "dlo", nil, segments.PutOptions{DLO: c + "/parts/", Meta: map[string]string{"k": "v"}})
	if err := st.Copy(t.Context(), c, "dlo", "copy"); err != nil {
		t.Fatal(err)
	}
	in := head(t, st, c, "copy")
	if in.DLO != c+"/parts/" || in.Size != 11 {
		t.Errorf("Head of the copy of a DLO: %+v", in)
	}
	wantMeta(t, "Head of the copy", in.Meta, map[string]string{"k": "v"})
	if b := mustRead(t, st, c, "copy", 0, -1); string(b) != "hello world" {
		t.Errorf("Get of the copy: %q", b)
	}
}

func testDelete(t *testing.T, st segments.ObjectStore, c string) {
	put(t, st, c, "obj", []byte("x"), segments.PutOptions{})
	put(t, st, c, "keep", []byte("y"), segments.PutOptions{})
	if err := st.Delete(t.Context(), c, "obj"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, st, c, "obj")
	if err := st.Delete(t.Context(), c, "obj"); err != nil {
		t.Errorf("Delete of a deleted object: %v", err)
	}
	if err := st.Delete(t.Context(), c, "never"); err != nil {
		t.Errorf("Delete of a missing object: %v", err)
	}
	head(t, st, c, "keep")
}

func testDeleteMany(t *testing.T, st segments.ObjectStore, c string) {
	doomed := []string{"a", "dir/b c", "dir/100%", "dir/ü+ß", "x/y/z"}
	for _, n := range append(slices.Clone(doomed), "keep", "dir/keep") {
		put(t, st, c, n, []byte(n), segments.PutOptions{})
	}
	if err := st.DeleteMany(t.Context(), c, append(slices.Clone(doomed), "missing", "dir/missing")); err != nil {
		t.Fatal(err)
	}
	for _, n := range doomed {
		wantMissing(t, st, c, n)
	}
	if got := names(t, st, c, "", 0); !slices.Equal(got, []string{"dir/keep", "keep"}) {
		t.Errorf("left after DeleteMany: %q", got)
	}
	if err := st.DeleteMany(t.Context(), c, nil); err != nil {
		t.Errorf("DeleteMany of nothing: %v", err)
	}
}

// names lists a container; subdirs get a trailing "(dir)".
func names(t *testing.T, st segments.ObjectStore, c, prefix string, delim rune) []string {
	t.Helper()
	var out []string
	err := st.List(t.Context(), c, prefix, delim, func(in segments.Info) error {
		if in.Subdir {
			out = append(out, in.Name+"(dir)")
		} else {
			out = append(out, in.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("List %q %q: %v", prefix, delim, err)
	}
	return out
}

// listing lists a container by name.
func listing(t *testing.T, st segments.ObjectStore, c, prefix string) map[string]segments.Info {
	t.Helper()
	out := map[string]segments.Info{}
	err := st.List(t.Context(), c, prefix, 0, func(in segments.Info) error { out[in.Name] = in; return nil })
	if err != nil {
		t.Fatalf("List %q: %v", prefix, err)
	}
	return out
}

func testListPrefix(t *testing.T, st segments.ObjectStore, c string) {
	for _, n := range []string{"img/b", "img/a", "img/é", "img/Z", "img", "imga", "other/x", "img/sub/c"} {
		put(t, st, c, n, []byte(n), segments.PutOptions{ContentType: "text/x-test"})
	}
	// Byte order: upper case before lower case, UTF-8 after ASCII.
	if got, want := names(t, st, c, "img/", 0), []string{"img/Z", "img/a", "img/b", "img/sub/c", "img/é"}; !slices.Equal(got, want) {
		t.Errorf("List img/: %q, want %q", got, want)
	}
	if got, want := names(t, st, c, "img", 0), []string{"img", "img/Z", "img/a", "img/b", "img/sub/c", "img/é", "imga"}; !slices.Equal(got, want) {
		t.Errorf("List img: %q, want %q", got, want)
	}
	if got := names(t, st, c, "nothing", 0); len(got) != 0 {
		t.Errorf("List of a prefix nothing has: %q", got)
	}
	in := listing(t, st, c, "img/a")["img/a"]
	if in.Container != c || in.Size != 5 || in.ETag != md5hex([]byte("img/a")) || in.ContentType != "text/x-test" || in.Subdir || len(in.Meta) != 0 {
		t.Errorf("listing entry: %+v", in)
	}
	recent(t, "listing entry", in.LastModified)
}

func testListDelimiter(t *testing.T, st segments.ObjectStore, c string) {
	for _, n := range []string{"a/1", "a/2/x", "a-b", "a0", "b", "a/2/y", "c/d/e", "a/3/"} {
		put(t, st, c, n, []byte("x"), segments.PutOptions{})
	}
	// "-" < "/" < "0": the subdir a/ sorts between a-b and a0.
	if got, want := names(t, st, c, "", '/'), []string{"a-b", "a/(dir)", "a0", "b", "c/(dir)"}; !slices.Equal(got, want) {
		t.Errorf("List with delimiter: %q, want %q", got, want)
	}
	if got, want := names(t, st, c, "a/", '/'), []string{"a/1", "a/2/(dir)", "a/3/(dir)"}; !slices.Equal(got, want) {
		t.Errorf("List a/ with delimiter: %q, want %q", got, want)
	}
	if got, want := names(t, st, c, "a/3/", '/'), []string{"a/3/"}; !slices.Equal(got, want) {
		t.Errorf("List a/3/ with delimiter: %q, want %q", got, want)
	}
	if got, want := names(t, st, c, "c/", '/'), []string{"c/d/(dir)"}; !slices.Equal(got, want) {
		t.Errorf("List c/ with delimiter: %q, want %q", got, want)
	}
	var sub segments.Info
	_ = st.List(t.Context(), c, "", '/', func(in segments.Info) error {
		if in.Name == "a/" {
			sub = in
		}
		return nil
	})
	if !sub.Subdir || sub.Container != c || sub.Size != 0 {
		t.Errorf("subdir entry: %+v", sub)
	}
}

func testListManifests(t *testing.T, st segments.ObjectStore, c string) {
	es, all := slo(t, st, c, "s/", 100, 23)
	etag := putManifest(t, st, c, "m/slo", es, segments.PutOptions{})
	body := []byte("a DLO manifest's own bytes")
	put(t, st, c, "m/dlo", body, segments.PutOptions{DLO: c + "/s/"})
	got := listing(t, st, c, "m/")
	// Swift: the listing has the SLO's whole size but, as its hash, the
	// MD5 of the manifest Swift stores, not the large object's ETag.
	if in := got["m/slo"]; in.Size != int64(len(all)) || in.ETag == etag || len(in.ETag) != 32 {
		t.Errorf("listing entry of an SLO of %d bytes, ETag %s: %+v", len(all), etag, in)
	}
	// Swift: a listing shows a DLO manifest as the object it is.
	if in := got["m/dlo"]; in.Size != int64(len(body)) || in.ETag != md5hex(body) {
		t.Errorf("listing entry of a DLO: %+v", in)
	}
}

func testListPages(t *testing.T, st segments.ObjectStore, c string) {
	const n = 1100
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("many/%04d", i))
	}
	g, ctx := errgroup.WithContext(t.Context())
	g.SetLimit(32)
	for _, name := range want {
		g.Go(func() error {
			_, err := st.Put(ctx, c, name, strings.NewReader("."), 1, "", segments.PutOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	put(t, st, c, "more", []byte("x"), segments.PutOptions{})
	if got := names(t, st, c, "many/", 0); !slices.Equal(got, want) {
		t.Errorf("List of %d names: %d names (first %q)", n, len(got), got[:min(3, len(got))])
	}
	if got := names(t, st, c, "", 0); len(got) != n+1 || got[n] != "more" {
		t.Errorf("List of all: %d names, want %d", len(got), n+1)
	}
	if got := names(t, st, c, "", '/'); !slices.Equal(got, []string{"many/(dir)", "more"}) {
		t.Errorf("List with delimiter: %q", got)
	}
}

func testListCallbackError(t *testing.T, st segments.ObjectStore, c string) {
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		put(t, st, c, n, []byte(n), segments.PutOptions{})
	}
	stop := errors.New("stop here")
	var seen []string
	err := st.List(t.Context(), c, "", 0, func(in segments.Info) error {
		seen = append(seen, in.Name)
		if in.Name == "c" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("List whose callback fails: %v, want the callback's error", err)
	}
	if !slices.Equal(seen, []string{"a", "b", "c"}) {
		t.Errorf("the callback saw %q, want a b c", seen)
	}
}

func testListEmpty(t *testing.T, st segments.ObjectStore, c string) {
	if got := names(t, st, c, "", 0); len(got) != 0 {
		t.Errorf("List of an empty container: %q", got)
	}
	if got := names(t, st, c, "", '/'); len(got) != 0 {
		t.Errorf("delimited List of an empty container: %q", got)
	}
}

func testListContainers(t *testing.T, st segments.ObjectStore, c string) {
	ctx := t.Context()
	list := func() []string {
		t.Helper()
		var got []string
		if err := st.ListContainers(ctx, c, func(name string) error {
			got = append(got, name)
			return nil
		}); err != nil {
			t.Fatalf("ListContainers: %v", err)
		}
		return got
	}
	if got := list(); !slices.Equal(got, []string{c}) {
		t.Errorf("ListContainers(%q) = %q, want only the container", c, got)
	}
	seg := c + "_segments"
	if err := st.CreateContainer(ctx, seg); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if got := list(); !slices.Equal(got, []string{c, seg}) {
		t.Errorf("ListContainers(%q) = %q, want %q", c, got, []string{c, seg})
	}
	stop := errors.New("stop")
	n := 0
	err := st.ListContainers(ctx, c, func(string) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("ListContainers with a failing callback: %v after %d names, want the callback's error after 1", err, n)
	}
}

func testAccount(t *testing.T, st segments.ObjectStore, c string) {
	ai, err := st.HeadAccount(t.Context())
	if err != nil {
		t.Fatalf("HeadAccount: %v", err)
	}
	if ai.Containers < 1 || ai.Objects < 0 || ai.BytesUsed < 0 || ai.QuotaBytes < -1 {
		t.Errorf("HeadAccount: %+v, want at least one container and no negative count", ai)
	}
}

func testContainer(t *testing.T, st segments.ObjectStore, c string) {
	ctx := t.Context()
	if ci, err := st.HeadContainer(ctx, c); err != nil {
		t.Errorf("HeadContainer: %v", err)
	} else if ci != (segments.ContainerInfo{QuotaBytes: -1}) {
		t.Errorf("HeadContainer of an empty container: %+v, want no bytes, no objects, no quota", ci)
	}
	if err := st.CreateContainer(ctx, c); err != nil {
		t.Errorf("CreateContainer of an existing container: %v", err)
	}
	put(t, st, c, "obj", []byte("xyz"), segments.PutOptions{})
	// The container's own figures follow its objects at once (the
	// account's lag behind: Swift's container updater).
	if ci, err := st.HeadContainer(ctx, c); err != nil {
		t.Errorf("HeadContainer: %v", err)
	} else if ci.Objects != 1 || ci.BytesUsed != 3 {
		t.Errorf("HeadContainer after one PUT of 3 bytes: %+v, want 1 object, 3 bytes", ci)
	}
	if err := st.CreateContainer(ctx, c); err != nil {
		t.Errorf("CreateContainer of a container with objects: %v", err)
	}
	head(t, st, c, "obj")

	seg := c + "_segments"
	if _, err := st.HeadContainer(ctx, seg); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("HeadContainer of a missing container: %v, want ErrNotFound", err)
	}
	if err := st.List(ctx, seg, "", 0, func(segments.Info) error { return nil }); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("List of a missing container: %v, want ErrNotFound", err)
	}
	if _, err := st.Head(ctx, seg, "obj"); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("Head in a missing container: %v, want ErrNotFound", err)
	}
	if _, _, err := read(st, ctx, seg, "obj", 0, -1, ""); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("Get in a missing container: %v, want ErrNotFound", err)
	}
	for range 2 {
		if err := st.CreateContainer(ctx, seg); err != nil {
			t.Fatalf("CreateContainer: %v", err)
		}
	}
	if _, err := st.HeadContainer(ctx, seg); err != nil {
		t.Errorf("HeadContainer of the new container: %v", err)
	}
	if got := names(t, st, seg, "", 0); len(got) != 0 {
		t.Errorf("a new container holds %q", got)
	}
}

func testLimits(t *testing.T, st segments.ObjectStore, _ string) {
	l, err := st.Limits(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !l.SLO || l.MaxManifestSegments < 2 || l.MaxManifestSize <= 0 || l.MaxFileSize <= 0 || len(l.Problems) != 0 {
		t.Errorf("Limits: %+v", l)
	}
}

func testCanceled(t *testing.T, st segments.ObjectStore, c string) {
	put(t, st, c, "obj", []byte("x"), segments.PutOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := st.Head(ctx, c, "obj"); !errors.Is(err, context.Canceled) {
		t.Errorf("Head with a cancelled context: %v", err)
	}
	if _, err := st.Put(ctx, c, "new", strings.NewReader("x"), 1, "", segments.PutOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v", err)
	}
	wantMissing(t, st, c, "new")
}

//go:build integration

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// smallSLOStorageURL is the demo account on the lab's second proxy, whose
// slo.max_manifest_segments is tiny (LAB_SMALL_SLO_SEGMENTS, 4).
func smallSLOStorageURL(t *testing.T) string {
	t.Helper()
	small := os.Getenv("LAB_SMALL_SLO_PROXY_URL")
	if small == "" {
		t.Fatal("LAB_SMALL_SLO_PROXY_URL is not set: eval \"$(test/lab/lab.sh env)\"")
	}
	u, err := url.Parse(labtest.Keeper.Current().StorageURL)
	if err != nil {
		t.Fatal(err)
	}
	s, err := url.Parse(small)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = s.Host
	return u.String()
}

// TestWriteNestedManifests: against a proxy that allows 4 segments per
// manifest, a file of 31 segments (and holes) is stored as nested SLO
// manifests, reads back identically through the mount and through both
// proxies, and an append to it (a new version referencing the old
// segments) nests again. The limit comes from /info, not from a flag.
func TestWriteNestedManifests(t *testing.T) {
	c := labtest.NewContainer(t)
	small := smallSLOStorageURL(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", small, "--segment-size", "1MiB"}})
	// The mount is visible a moment before the daemon logs it.
	waitFor(t, 10*time.Second, "imagefs to log the proxy's limit from /info (max_manifest_segments=4)", func() bool {
		return strings.Contains(d.LogText(), "max_manifest_segments=4")
	})
	data, _ := os.ReadFile(must(labtest.RandomFile(t, 24<<20+5, 31)))
	// 24 MiB of data, a 6 MiB hole, 5 more bytes: 31 parts.
	f, err := os.Create(d.Path("nested.img"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:24<<20]); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[24<<20:], 30<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	want := make([]byte, 30<<20+5)
	copy(want, data[:24<<20])
	copy(want[30<<20:], data[24<<20:])
	sum := sha256.Sum256(want)
	wantSum := hex.EncodeToString(sum[:])

	var subs int
	for _, n := range labtest.SegmentNames(t, c) {
		if strings.Contains(n, "/manifest-") {
			subs++
		}
	}
	if subs < 8 {
		t.Errorf("%d sub-manifests, want nesting (at least 8)", subs)
	}
	entries, err := labtest.Swift.GetManifest(t.Context(), c, "nested.img")
	if err != nil || len(entries) > 4 {
		t.Fatalf("top manifest: %d entries, %v", len(entries), err)
	}
	if got := labtest.SHA256File(t, d.Path("nested.img")); got != wantSum {
		t.Errorf("sha256 through the mount %s, want %s", got, wantSum)
	}
	if got := labtest.SwiftDownloadSHA256(t, c, "nested.img"); got != wantSum {
		t.Errorf("sha256 through swift download %s, want %s", got, wantSum)
	}
	in, err := labtest.Swift.Head(t.Context(), c, "nested.img")
	if err != nil || in.Meta["sha256"] != wantSum || in.Size != int64(len(want)) {
		t.Errorf("metadata: size %d sha256 %q (%v)", in.Size, in.Meta["sha256"], err)
	}

	// Append: the new version references every old segment and adds one.
	before := labtest.SegmentNames(t, c)
	af, err := os.OpenFile(d.Path("nested.img"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := af.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	if err := af.Close(); err != nil {
		t.Fatalf("close after append: %v", err)
	}
	want = append(want, "tail"...)
	got, err := os.ReadFile(d.Path("nested.img"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after append: %d bytes, %v", len(got), err)
	}
	in, err = labtest.Swift.Head(t.Context(), c, "nested.img")
	if err != nil || in.Size != int64(len(want)) {
		t.Fatalf("after append: %+v %v", in, err)
	}
	// The appended version reuses data imagefs did not read again: it has
	// no sha256 rather than a wrong one.
	if in.Meta["sha256"] != "" {
		t.Errorf("sha256 after append: %q", in.Meta["sha256"])
	}
	after := labtest.SegmentNames(t, c)
	for _, n := range before {
		if !strings.Contains(n, "/manifest-") && !slices.Contains(after, n) {
			t.Errorf("the append deleted segment %s, which the new version references", n)
		}
	}
	// The replaced version's own sub-manifests go with its reap, a grace
	// period (2 s here) after the append.
	waitFor(t, 20*time.Second, "the replaced version's unreferenced objects to be reaped", func() bool {
		rep, err := segments.FindOrphans(t.Context(), labtest.Swift, segments.GCOptions{Container: c})
		if err != nil {
			t.Fatal(err)
		}
		return len(rep.Orphans)+len(rep.Young) == 0
	})
}

func must(p, _ string) string { return p }

// TestWriteTwoTiB: with the default settings (32 MiB segments, the stock
// max_manifest_segments of 1000), a 2 TiB file (`dd seek=` to its last
// MiB: a 2 TiB hole, then data) needs 65,536 segment entries, so nested
// manifests; it commits in seconds, without 2 TiB of memory or of zero
// uploads, reads back through the mount and straight from Swift, and its
// removal leaves no segment behind.
func TestWriteTwoTiB(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{})
	const size = 2 << 40
	src := must(labtest.RandomFile(t, 1<<20, 2048))
	tail, _ := os.ReadFile(src)
	labtest.RunCmd(t, "dd", "if="+src, "of="+d.Path("2t.raw"), "bs=1M", "count=1", "seek=2097151", "status=none")

	st, err := os.Stat(d.Path("2t.raw"))
	if err != nil || st.Size() != size {
		t.Fatalf("stat through the mount: %v, size %d, want %d", err, st.Size(), int64(size))
	}
	in, err := labtest.Swift.Head(t.Context(), c, "2t.raw")
	if err != nil || in.Size != size {
		t.Fatalf("HEAD in Swift: %v, size %d, want %d", err, in.Size, int64(size))
	}
	if n := len(labtest.SegmentNames(t, c)); n > 100 {
		t.Errorf("%d objects in the segment container for 1 MiB of data and a hole", n)
	}
	read := func(what string, off int64, n int) []byte {
		t.Helper()
		f, err := os.Open(d.Path("2t.raw"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatalf("%s: read at %d through the mount: %v", what, off, err)
		}
		return b
	}
	if !bytes.Equal(read("tail", size-1<<20, 1<<20), tail) {
		t.Fatal("the last MiB read through the mount differs from what was written")
	}
	if b := read("hole", 1<<40+12345, 64<<10); !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatal("the hole does not read as zeros through the mount")
	}
	rc, err := labtest.Swift.Get(t.Context(), c, "2t.raw", size-1<<20, 1<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, tail) {
		t.Fatalf("the last MiB from Swift differs (%v)", err)
	}

	if err := os.Remove(d.Path("2t.raw")); err != nil {
		t.Fatal(err)
	}
	// rm retires the version; the mount's reaper deletes it after the
	// grace period (2 s here).
	waitFor(t, 30*time.Second, "every segment to be reaped after rm", func() bool { return len(labtest.SegmentNames(t, c)) == 0 })
}

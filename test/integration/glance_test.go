//go:build integration

package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// Glance interop, with the real glance_store Swift driver (the code a
// Glance API server runs) in both of its modes: an image written through
// imagefs is read by glance_store at the location URL Glance would record
// for it, with the checksum (MD5) and os_hash_value (SHA-512) that
// imagefs's xattrs give; an image glance_store stores reads through
// imagefs; and glance_store's delete of an imagefs-written image removes
// its segments, after which imagefs gc still works and leaves nothing.

// glanceArgs: small segments, so that a 5 MiB image is an SLO of several,
// and the digests Glance records.
var glanceArgs = []string{"--segment-size", "1MiB", "--md5", "--sha512"}

const glanceImageSize = 5<<20 + 12345

// digestXattrs checks that the digest xattrs of p are listed and equal
// md5sum, sha512sum and sha256sum of the file want, and returns the MD5
// and the SHA-512.
func digestXattrs(t *testing.T, p, want string) (md5, sha512 string) {
	t.Helper()
	buf := make([]byte, 1024)
	n, err := syscall.Listxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	listed := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
	got := map[string]string{}
	for _, x := range []struct{ attr, tool string }{
		{"user.imagefs.md5", "md5sum"}, {"user.imagefs.sha512", "sha512sum"}, {"user.imagefs.sha256", "sha256sum"},
	} {
		sum := strings.Fields(labtest.RunCmd(t, x.tool, want))[0]
		n, err := syscall.Getxattr(p, x.attr, buf)
		if err != nil || string(buf[:n]) != sum {
			t.Errorf("%s of %s = %q, %v; want %s's %s", x.attr, p, buf[:max(n, 0)], err, x.tool, sum)
		}
		if !slices.Contains(listed, x.attr) {
			t.Errorf("listxattr %s = %q: no %s", p, listed, x.attr)
		}
		got[x.attr] = sum
	}
	return got["user.imagefs.md5"], got["user.imagefs.sha512"]
}

// checkGlanceRead reads the image at url with glance_store and checks its
// size and digests.
func checkGlanceRead(t *testing.T, g labtest.GlanceStore, url string, size int64, md5, sha512 string) {
	t.Helper()
	r := g.Get(t, url)
	if r.Size != size || r.Read != size || r.GetSize != size {
		t.Errorf("glance_store get %s: size %d, read %d, get_size %d; want %d", url, r.Size, r.Read, r.GetSize, size)
	}
	if r.Checksum != md5 || r.OSHashValue != sha512 {
		t.Errorf("glance_store get %s: md5 %s sha512 %s; want %s %s", url, r.Checksum, r.OSHashValue, md5, sha512)
	}
}

// checkGlanceAdd stores file as image id with glance_store and checks
// that the location, checksum and os_hash_value it reports are the ones
// Glance would record for the same bytes written through imagefs.
func checkGlanceAdd(t *testing.T, g labtest.GlanceStore, id, file, md5, sha512 string) {
	t.Helper()
	img := g.Add(t, id, file)
	if img.Location != g.Location(id) || img.Size != glanceImageSize {
		t.Errorf("glance_store add: location %s, size %d; want %s, %d", img.Location, img.Size, g.Location(id), glanceImageSize)
	}
	if img.Checksum != md5 || img.OSHashValue != sha512 {
		t.Errorf("glance_store add: checksum %s os_hash_value %s; want imagefs's md5 %s and sha512 %s of the same bytes",
			img.Checksum, img.OSHashValue, md5, sha512)
	}
}

// checkReadsThrough checks that the mount shows image id, and only it, of
// the right size and content (the segments of a Glance DLO hidden).
func checkReadsThrough(t *testing.T, d *labtest.Daemon, id string, size int64, sha256 string) {
	t.Helper()
	if st, err := os.Stat(d.Path(id)); err != nil || st.Size() != size {
		t.Fatalf("stat of the Glance image through the mount: %v, %v; want %d bytes", st, err, size)
	}
	if got := labtest.SHA256File(t, d.Path(id)); got != sha256 {
		t.Errorf("sha256 of the Glance image through the mount %s, want %s", got, sha256)
	}
}

func isRetirement(name string) bool { return strings.HasPrefix(name, labtest.StatePrefix+"retired/") }

func gone(t *testing.T, c, obj string) bool {
	_, err := labtest.Swift.Head(context.Background(), c, obj)
	return errors.Is(err, segments.ErrNotFound)
}

// TestGlanceSingleTenant: a single-tenant store (container c, locations
// swift+config://ref/c/<id>), mounted by imagefs. Both directions; a sparse
// image (holes: ranges of a zero segment), read and deleted; then an
// overwrite in place through imagefs (a retired version whose segments the
// current one references), which glance_store reads too, and
// glance_store's delete of it: the manifest and every segment it
// references go (DELETE ?multipart-manifest=delete), the retired
// version's with them; imagefs gc then reaps the retirement record of
// objects already gone without an error, leaving nothing.
func TestGlanceSingleTenant(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	g := labtest.GlanceStore{Container: c}
	// A long grace: the retired version is still recorded when Glance
	// deletes the current one.
	d := labtest.Mount(t, c, labtest.MountOpts{Args: append([]string{"--version-grace", "1h"}, glanceArgs...)})
	src, sha256 := labtest.RandomFile(t, glanceImageSize, 81)

	id := labtest.NewImageID()
	labtest.RunCmd(t, "cp", src, d.Path(id))
	md5, sha512 := digestXattrs(t, d.Path(id), src)
	checkGlanceRead(t, g, g.Location(id), glanceImageSize, md5, sha512)

	id2 := labtest.NewImageID()
	checkGlanceAdd(t, g, id2, src, md5, sha512)
	if gone(t, c, id2+"-00006") { // Glance's DLO: 6 chunks of 1,024,000 bytes
		t.Errorf("glance_store stored %s without its 6th chunk: not the DLO the test means", id2)
	}
	checkReadsThrough(t, d, id2, glanceImageSize, sha256)

	// A sparse image: its holes are ranges of one zero segment, which the
	// manifest references several times; glance_store reads it and deletes
	// it whole.
	sparse := filepath.Join(t.TempDir(), "sparse.img")
	labtest.RunCmd(t, "truncate", "-s", "6M", sparse)
	labtest.RunCmd(t, "dd", "if="+src, "of="+sparse, "bs=100k", "count=3", "conv=notrunc", "status=none")
	labtest.RunCmd(t, "dd", "if="+src, "of="+sparse, "bs=512k", "count=1", "seek=8", "conv=notrunc", "status=none")
	id3 := labtest.NewImageID()
	labtest.RunCmd(t, "cp", "--sparse=always", sparse, d.Path(id3))
	smd5, ssha512 := digestXattrs(t, d.Path(id3), sparse)
	if !slices.ContainsFunc(labtest.SegmentNames(t, c), func(n string) bool {
		return strings.HasPrefix(n, id3+"/") && strings.HasSuffix(n, "/zero")
	}) {
		t.Fatalf("the sparse image has no zero segment: %v", labtest.SegmentNames(t, c))
	}
	checkGlanceRead(t, g, g.Location(id3), 6<<20, smd5, ssha512)
	g.Delete(t, g.Location(id3))
	for _, n := range labtest.SegmentNames(t, c) {
		if strings.HasPrefix(n, id3+"/") {
			t.Errorf("glance_store's delete of the sparse image left %s", n)
		}
	}

	// An overwrite in place: the new version references ranges of all of
	// the first one's segments around the patch; the first is retired.
	first := labtest.SegmentNames(t, c)
	patched := src + ".patched"
	labtest.RunCmd(t, "cp", src, patched)
	for _, f := range []string{patched, d.Path(id)} {
		labtest.RunCmd(t, "dd", "if=/dev/zero", "of="+f, "bs=4096", "count=3", "seek="+strconv.Itoa(600), "conv=notrunc", "status=none")
	}
	pmd5 := strings.Fields(labtest.RunCmd(t, "md5sum", patched))[0]
	psha512 := strings.Fields(labtest.RunCmd(t, "sha512sum", patched))[0]
	checkGlanceRead(t, g, g.Location(id), glanceImageSize, pmd5, psha512)
	second := labtest.SegmentNames(t, c)
	if len(second) <= len(first) {
		t.Fatalf("the overwrite uploaded no segment: %v then %v", first, second)
	}

	g.Delete(t, g.Location(id))
	if !gone(t, c, id) {
		t.Error("the manifest is still there after glance_store's delete")
	}
	// The new version referenced ranges of every segment of the first one:
	// glance_store's delete took them all, those of the retired version
	// too, whose record is still there.
	if n := labtest.SegmentNames(t, c); len(n) != 0 {
		t.Errorf("glance_store's delete left segments: %v", n)
	}
	if !slices.ContainsFunc(labtest.StateNames(t, c), isRetirement) {
		t.Errorf("no retirement record of the first version: %v", labtest.StateNames(t, c))
	}
	waitFor(t, 10*time.Second, "the deleted image to leave the mount", func() bool {
		_, err := os.Stat(d.Path(id))
		return errors.Is(err, os.ErrNotExist)
	})

	// The mount's hold of the first version (the overwrite's) lingers for
	// minutes: unmount, which ends it.
	d.Stop()
	r := labtest.Exec(t, "gc", "--delete", "--min-age", "0s", c)
	if r.Code != 0 {
		t.Fatalf("imagefs gc --delete after glance_store's delete: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if slices.ContainsFunc(labtest.StateNames(t, c), isRetirement) {
		t.Errorf("after gc --delete, a retirement record is left: %v\n%s", labtest.StateNames(t, c), r.Stdout)
	}
	if r := labtest.Exec(t, "gc", "--min-age", "0s", c); r.Code != 0 || !strings.Contains(r.Stdout, "no orphan segments") {
		t.Errorf("imagefs gc after the cleanup: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	g.Delete(t, g.Location(id2))
	for _, o := range []string{id2, id2 + "-00001", id2 + "-00006"} {
		if !gone(t, c, o) {
			t.Errorf("%s is still there after glance_store's delete of its image", o)
		}
	}
}

// TestGlanceMultiTenant: a multi-tenant store (image <id> in container
// <prefix>_<id> of the user's account, locations swift+http://<storage
// URL>/<prefix>_<id>/<id>). imagefs mounts the image's container and
// writes the image at its root under its id; glance_store reads it. An
// image glance_store stores reads through a mount of its container.
// glance_store's delete removes the image, its segments and the image's
// container; the segment container imagefs made stays, empty of segments.
func TestGlanceMultiTenant(t *testing.T) {
	t.Parallel()
	g := labtest.GlanceStore{Multi: true, Container: labtest.NewContainer(t)}
	src, sha256 := labtest.RandomFile(t, glanceImageSize, 82)

	id := labtest.NewImageID()
	c := g.CreateImageContainer(t, id)
	// The digests chosen by the environment this time.
	d := labtest.Mount(t, c, labtest.MountOpts{Args: glanceArgs[:2], Env: []string{"IMAGEFS_MD5=true", "IMAGEFS_SHA512=1"}})
	labtest.RunCmd(t, "cp", src, d.Path(id))
	md5, sha512 := digestXattrs(t, d.Path(id), src)
	if !strings.HasPrefix(g.Location(id), "swift+http://") {
		t.Fatalf("location %s: want swift+http://<storage URL>/...", g.Location(id))
	}
	checkGlanceRead(t, g, g.Location(id), glanceImageSize, md5, sha512)
	if len(labtest.SegmentNames(t, c)) != 6 {
		t.Errorf("the image has segments %v, want 6", labtest.SegmentNames(t, c))
	}

	id2 := labtest.NewImageID()
	g.CleanupImageContainer(t, id2)
	checkGlanceAdd(t, g, id2, src, md5, sha512)
	d2 := labtest.Mount(t, g.ImageContainer(id2), labtest.MountOpts{})
	checkReadsThrough(t, d2, id2, glanceImageSize, sha256)
	if ents, err := os.ReadDir(d2.Dir); err != nil || len(ents) != 1 {
		t.Errorf("the Glance image's container shows %d entries (%v), want the image alone", len(ents), err)
	}
	d2.Stop()

	// An image is handed to Glance once written: unmount, then Glance owns
	// it (its delete removes the container, which must then be empty).
	d.Stop()
	g.Delete(t, g.Location(id))
	err := labtest.Swift.List(context.Background(), c, "", 0, func(segments.Info) error { return nil })
	if !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("the image's container after glance_store's delete: %v, want it gone", err)
	}
	if n := labtest.SegmentNames(t, c); len(n) != 0 {
		t.Errorf("glance_store's delete left segments: %v", n)
	}
	g.Delete(t, g.Location(id2))
	err = labtest.Swift.List(context.Background(), g.ImageContainer(id2), "", 0, func(segments.Info) error { return nil })
	if !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("the Glance image's container after its delete: %v, want it gone", err)
	}
}

// TestGlanceNestedManifest: an image of more segments than one manifest
// may hold (a proxy that allows 4) is stored as nested SLO manifests;
// glance_store reads it whole with its digests, and its delete recurses:
// the sub-manifests and every segment go, and imagefs gc finds nothing.
func TestGlanceNestedManifest(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	g := labtest.GlanceStore{Container: c}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: append([]string{"--os-storage-url", smallSLOStorageURL(t)}, glanceArgs...)})
	waitFor(t, 10*time.Second, "imagefs to log the proxy's limit from /info (max_manifest_segments=4)", func() bool {
		return strings.Contains(d.LogText(), "max_manifest_segments=4")
	})
	src, _ := labtest.RandomFile(t, glanceImageSize, 83)
	id := labtest.NewImageID()
	labtest.RunCmd(t, "cp", src, d.Path(id))
	md5, sha512 := digestXattrs(t, d.Path(id), src)
	if !slices.ContainsFunc(labtest.SegmentNames(t, c), func(n string) bool { return strings.Contains(n, "/manifest-") }) {
		t.Fatalf("no sub-manifest: %v", labtest.SegmentNames(t, c))
	}
	checkGlanceRead(t, g, g.Location(id), glanceImageSize, md5, sha512)
	g.Delete(t, g.Location(id))
	if n := labtest.SegmentNames(t, c); len(n) != 0 || !gone(t, c, id) {
		t.Errorf("after glance_store's delete of a nested manifest: segments %v, manifest gone %v", n, gone(t, c, id))
	}
	d.Stop()
	if r := labtest.Exec(t, "gc", "--min-age", "0s", c); r.Code != 0 || !strings.Contains(r.Stdout, "no orphan segments") {
		t.Errorf("imagefs gc after glance_store's delete: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

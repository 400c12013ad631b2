//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestReadCacheSurvivesRemount: blocks cached on disk are not fetched
// again after a clean remount nor after a crash; the image read whole is
// assembled into one whole file, which when damaged is discarded and
// fetched again; an overwritten object is read anew; two mounts cannot
// share one cache directory. (Damaged block files: cache unit tests.)
func TestReadCacheSurvivesRemount(t *testing.T) {
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 90, Size: 40<<20 + 5}
	labtest.PutSLO(t, c, "vm.img", p, p.Size, 16<<20)
	cacheDir := t.TempDir()
	fp := labtest.NewFaultProxy(t) // counts the GETs
	args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", cacheDir, "--cache-size", "1GiB"}
	read := func(d *labtest.Daemon, want labtest.Pattern) (gets int, bytes int64) {
		t.Helper()
		n0, b0 := fp.DataGETs()
		if got := labtest.SHA256File(t, d.Path("vm.img")); got != want.SHA256() {
			t.Fatalf("sha256 %s, want %s", got, want.SHA256())
		}
		n1, b1 := fp.DataGETs()
		return n1 - n0, b1 - b0
	}

	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if _, b := read(d, p); b < p.Size {
		t.Fatalf("first read fetched %d bytes of %d", b, p.Size)
	}
	d.Stop()

	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if n, b := read(d, p); n != 0 {
		t.Errorf("after a remount, %d GETs (%d bytes) of cached blocks", n, b)
	}
	d.Kill() // a crash
	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if n, b := read(d, p); n != 0 {
		t.Errorf("after a crash and a remount, %d GETs (%d bytes) of cached blocks", n, b)
	}
	if r := labtest.Exec(t, "mount", "--cache-dir", cacheDir, c, t.TempDir()); r.Code == 0 ||
		!strings.Contains(r.Stderr, "in use by another imagefs mount") {
		t.Errorf("a second mount on the same cache directory: exit %d, %s", r.Code, r.Stderr)
	}
	// Read whole, the image is assembled into one whole file (a close
	// before that leaves its blocks, assembled at the next mount).
	var whole string
	for deadline := time.Now().Add(30 * time.Second); whole == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		seals, _ := filepath.Glob(filepath.Join(cacheDir, "whole-v1", "*", "*.seal"))
		if len(seals) == 1 {
			whole = strings.TrimSuffix(seals[0], ".seal")
		}
	}
	if whole == "" {
		t.Fatal("the image read whole was not assembled into a whole file in the cache directory")
	}
	d.Stop()

	// Damage the whole file: discarded at the next mount (its inode,
	// size and times are sealed), the image fetched again.
	b, err := os.ReadFile(whole)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	os.WriteFile(whole, b, 0o600)
	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if _, b := read(d, p); b < p.Size {
		t.Errorf("after damaging the whole file: %d bytes fetched, want the image's %d", b, p.Size)
	}
	if !strings.Contains(d.LogText(), "discarding a whole-image cache file") {
		t.Error("the damaged file is not in the log")
	}
	d.Stop()

	// A new version of the object: its own blocks, fetched.
	q := labtest.Pattern{Seed: 91, Size: p.Size}
	labtest.PutPlain(t, c, "vm.img", q, q.Size)
	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if _, b := read(d, q); b < q.Size {
		t.Errorf("the new version fetched %d bytes of %d", b, q.Size)
	}
}

// TestReadCacheDiskFull: a cache directory on a filesystem that fills up
// is logged once, and reads go on, uncached.
func TestReadCacheDiskFull(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 92, Size: 24 << 20}
	labtest.PutPlain(t, c, "vm.img", p, p.Size)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--cache-dir", dir, "--cache-size", "1GiB", "--read-memory", "16MiB", "--read-ahead", "8MiB"}})
	for range 2 { // the second time from Swift again: it did not fit
		f := labtest.OpenDirect(t, d.Path("vm.img"))
		buf := make([]byte, p.Size)
		if n, err := f.ReadAt(buf, 0); n != len(buf) || string(buf) != string(p.Bytes(0, p.Size)) {
			t.Fatalf("read with a full cache disk: %d, %v", n, err)
		}
		f.Close()
	}
	if n := strings.Count(d.LogText(), "block cache directory is full"); n != 1 {
		t.Errorf("disk full logged %d times, want once", n)
	}
}

// TestReadKeepsPageCache: a file read again while it has not changed is
// served by the kernel's page cache (almost no READ reaches the daemon,
// although the daemon's own cache is too small to hold it); once the object changes, the next open reads the new version.
func TestReadKeepsPageCache(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 93, Size: 48 << 20}
	labtest.PutPlain(t, c, "vm.img", p, p.Size)
	addr := freeAddr(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--metrics-addr", addr, "--read-memory", "16MiB", "--read-ahead", "8MiB"}})
	const sample = "imagefs_fuse_read_bytes_total"
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != p.SHA256() {
		t.Fatal("first read: wrong data")
	}
	r0 := metric(t, addr, sample)
	if r0 < float64(p.Size) {
		t.Fatalf("the first read asked the daemon for %.0f bytes, less than the file's %d", r0, p.Size)
	}
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != p.SHA256() {
		t.Fatal("second read: wrong data")
	}
	// This machine evicts the odd clean page on its own (workingset
	// refaults without reclaim), so a few pages may be asked for again;
	// a dropped page cache asks for the whole file.
	if r1 := metric(t, addr, sample); r1-r0 > float64(p.Size/16) {
		t.Errorf("reading an unchanged file again asked the daemon for %.0f of its %d bytes: the page cache was dropped", r1-r0, p.Size)
	}
	q := labtest.Pattern{Seed: 94, Size: p.Size}
	labtest.PutPlain(t, c, "vm.img", q, q.Size)
	time.Sleep(1100 * time.Millisecond) // the attribute cache
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != q.SHA256() {
		t.Error("after the object changed, the old pages were served")
	}
}

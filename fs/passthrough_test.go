package fs_test

import (
	"bytes"
	"os"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/fs"
)

// TestPassthroughWholeImage: once an image is whole in the disk cache, a
// read-only open is passed through: its reads (O_DIRECT too) never reach
// the daemon and give the image's bytes. A new version of the object is
// read through the daemon until it is whole in turn; an open for writing
// is never passed through.
func TestPassthroughWholeImage(t *testing.T) {
	e, blocks := mountPassthrough(t, 0)
	data := randBytes(3*mib+4096, 50)
	e.put(t, "vm.img", data, nil)
	p := e.dir + "/vm.img"
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("first read: %d bytes, %v", len(got), err)
	}
	if e.root.Stats().Passthroughs != 0 {
		t.Fatal("an image not yet in the cache was passed through")
	}
	waitWhole := func(n int64) {
		t.Helper()
		for range 500 {
			if blocks.Stats().DiskWholeImages == n {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("whole images in the cache: %d, want %d", blocks.Stats().DiskWholeImages, n)
	}
	waitWhole(1)

	readDirect := func(want []byte) {
		t.Helper()
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, len(want)) // Go's heap blocks of this size are page aligned
		if n, err := f.ReadAt(buf, 0); n != len(want) || !bytes.Equal(buf, want) {
			t.Fatalf("O_DIRECT read: %d bytes, %v", n, err)
		}
	}
	reads := e.lat.count("read")
	waitReleased(t, e)
	readDirect(data)
	if got := e.lat.count("read") - reads; got != 0 {
		t.Errorf("%d READ requests reached the daemon for a whole cached image", got)
	}
	if e.root.Stats().Passthroughs != 1 {
		t.Errorf("passthrough opens %d, want 1", e.root.Stats().Passthroughs)
	}

	// A new version: read through the daemon, then whole, then passed
	// through again.
	time.Sleep(1100 * time.Millisecond) // the first passthrough lets go
	data2 := randBytes(len(data), 51)
	e.put(t, "vm.img", data2, nil)
	reads = e.lat.count("read")
	readDirect(data2)
	if e.lat.count("read") == reads || e.root.Stats().Passthroughs != 1 {
		t.Errorf("a new version was passed through before it was whole (%d passthrough opens)", e.root.Stats().Passthroughs)
	}
	waitWhole(2)
	reads = e.lat.count("read")
	waitReleased(t, e)
	readDirect(data2)
	if e.lat.count("read") != reads || e.root.Stats().Passthroughs != 2 {
		t.Errorf("the new version, whole: %d READs, %d passthrough opens", e.lat.count("read")-reads, e.root.Stats().Passthroughs)
	}

	// An open for writing (an overwrite) is not passed through.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "new" {
		t.Errorf("after an overwrite: %q, %v", got, err)
	}
}

// TestPassthroughMixedOpens: the kernel refuses (EIO) an inode open both
// through its page cache and passed through. An open of an image that
// became whole while an older open reads it through the daemon is not
// passed through. While an old version is passed through, a new version
// (from another host) and an overwrite open on a new inode: no EBUSY, the
// new bytes, and the old open still reads the old ones.
func TestPassthroughMixedOpens(t *testing.T) {
	e, blocks := mountPassthrough(t, 0)
	data := randBytes(2*mib+5, 52)
	e.put(t, "vm.img", data, nil)
	p := e.dir + "/vm.img"
	cached, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer cached.Close() // before the unmount, also after a t.Fatal
	checkRead(t, cached, data)
	waitWholeImages(t, blocks, 1)
	ino0 := inoOf(t, p)
	second, err := os.Open(p)
	if err != nil {
		t.Fatalf("an open next to one through the page cache: %v", err)
	}
	defer second.Close()
	checkRead(t, second, data)
	second.Close()
	cached.Close()
	if e.root.Stats().Passthroughs != 0 {
		t.Error("passed through while another open used the page cache")
	}

	waitReleased(t, e)
	pt, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close() // after a t.Fatal; closing twice is harmless
	checkRead(t, pt, data)
	if e.root.Stats().Passthroughs != 1 {
		t.Fatal("not passed through once alone")
	}
	if ino := inoOf(t, p); ino != ino0 {
		t.Errorf("a file passed through changed its inode number: %d, was %d", ino, ino0)
	}
	data2 := randBytes(len(data)+7, 53)
	e.put(t, "vm.img", data2, nil) // another host
	other, err := os.Open(p)
	if err != nil {
		t.Fatalf("an open of a new version next to a passed-through one: %v", err)
	}
	defer other.Close()
	checkRead(t, other, data2)
	checkRead(t, pt, data) // the old open still reads its version
	if st := fstat(t, pt); st.Size != int64(len(data)) || st.Ino != ino0 {
		t.Errorf("the passed-through open: size %d ino %d, want %d %d", st.Size, st.Ino, len(data), ino0)
	}
	ino1 := inoOf(t, p)
	if ino1 == ino0 || fstat(t, other).Ino != ino1 {
		t.Errorf("inode numbers: passed through %d, the name %d, its new open %d", ino0, ino1, fstat(t, other).Ino)
	}
	other.Close()

	// An overwrite of the name (on its new inode, which nothing passes
	// through) while the old one is still open.
	if err := os.WriteFile(p, []byte("new"), 0o644); err != nil {
		t.Fatalf("an overwrite next to a passed-through open: %v", err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "new" {
		t.Errorf("after the overwrite: %q, %v", got, err)
	}
	checkRead(t, pt, data)
	if n := e.root.Stats().PassthroughNewInodes; n != 1 {
		t.Errorf("%d new inodes, want 1", n)
	}
	if ino := inoOf(t, p); ino != ino1 {
		t.Errorf("an overwrite of a file that does not pass through changed its inode number: %d, was %d", ino, ino1)
	}
}

// TestPassthroughNewInodeWithinTTL: while the kernel trusts its entry
// (the entry TTL), an open reaches the inode that passes through: an
// overwrite (O_TRUNC, then >>) and an open of a version written by another
// host go to a new inode all the same (the kernel's retry after ESTALE),
// with no error and no wait for the passed-through open to close. The old
// open keeps its version, its size and its inode number.
func TestPassthroughNewInodeWithinTTL(t *testing.T) {
	e, blocks := mountPassthrough(t, time.Minute)
	data := randBytes(3*mib+1, 54)
	e.put(t, "vm.img", data, nil)
	p := e.dir + "/vm.img"
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("first read: %d bytes, %v", len(got), err)
	}
	waitWholeImages(t, blocks, 1)
	ino0 := inoOf(t, p)
	pt := openPassedThrough(t, e, p)
	defer pt.Close()
	checkRead(t, pt, data)

	start := time.Now()
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("an overwrite within the entry TTL of a passed-through open: %v", err)
	}
	if _, err := w.Write([]byte("version B")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("the overwrite took %v: it waited for the passed-through open", d)
	}
	a, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf(">> after the overwrite: %v", err)
	}
	if _, err := a.Write([]byte("+")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "version B+" {
		t.Errorf("the new version: %q, %v", got, err)
	}
	checkRead(t, pt, data)
	if st := fstat(t, pt); st.Size != int64(len(data)) || st.Ino != ino0 {
		t.Errorf("the passed-through open: size %d ino %d, want %d %d", st.Size, st.Ino, len(data), ino0)
	}
	if ino := inoOf(t, p); ino == ino0 {
		t.Errorf("the overwritten name still has the passed-through inode %d", ino)
	}

	// Another host's version, within the entry TTL: the new name's
	// inode passes through "version B+" meanwhile.
	b := []byte("version B+")
	waitWholeImages(t, blocks, 2)
	ptB := openPassedThrough(t, e, p)
	defer ptB.Close()
	checkRead(t, ptB, b)
	inoB := inoOf(t, p)
	data3 := randBytes(2*mib, 55)
	e.put(t, "vm.img", data3, nil)
	c, err := os.Open(p)
	if err != nil {
		t.Fatalf("an open of another host's version within the entry TTL: %v", err)
	}
	defer c.Close()
	checkRead(t, c, data3)
	checkRead(t, ptB, b)
	checkRead(t, pt, data)
	if ino := fstat(t, c).Ino; ino == inoB || ino == ino0 {
		t.Errorf("another host's version opened on inode %d (passed-through inodes %d, %d)", ino, ino0, inoB)
	}
	if n := e.root.Stats().PassthroughNewInodes; n != 2 {
		t.Errorf("%d new inodes, want 2", n)
	}
}

// checkRead reads f whole from the start and compares.
func checkRead(t *testing.T, f *os.File, want []byte) {
	t.Helper()
	got := make([]byte, len(want)+1)
	if n, _ := f.ReadAt(got, 0); n != len(want) || !bytes.Equal(got[:n], want) {
		t.Fatalf("%s: read %d bytes, want %d (or other bytes)", f.Name(), n, len(want))
	}
}

// openPassedThrough opens p for reading, passed through: the RELEASE of
// an open through the page cache closed just before may still be on its
// way (the kernel does not mix the two), so it tries again meanwhile.
func openPassedThrough(t *testing.T, e *env, p string) *os.File {
	t.Helper()
	for range 100 {
		n := e.root.Stats().Passthroughs
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if e.root.Stats().Passthroughs > n {
			return f
		}
		f.Close()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not passed through", p)
	return nil
}

func waitWholeImages(t *testing.T, blocks *cache.Blocks, n int64) {
	t.Helper()
	for range 500 {
		if blocks.Stats().DiskWholeImages == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("whole images in the cache: %d, want %d", blocks.Stats().DiskWholeImages, n)
}

func inoOf(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func fstat(t *testing.T, f *os.File) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitReleased waits until the daemon has had the RELEASE of every open
// so far: the kernel sends it after close(2) has returned, and an open
// passes through only while no open reads through the page cache.
func waitReleased(t *testing.T, e *env) {
	t.Helper()
	for range 500 {
		if e.lat.count("release") >= e.lat.count("open") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d RELEASEs for %d OPENs after 5 s", e.lat.count("release"), e.lat.count("open"))
}

// mountPassthrough mounts with passthrough and a disk cache of its own;
// attrTTL 0 keeps the default.
func mountPassthrough(t *testing.T, attrTTL time.Duration) (*env, *cache.Blocks) {
	t.Helper()
	blocks, err := cache.New(cache.Options{Memory: 4 * mib, Dir: t.TempDir(), DirSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blocks.Close() })
	e := mountWith(t, mib, func(o *fs.Options, _ *fusefs.Options) {
		o.Blocks = blocks
		o.Passthrough = true
		if attrTTL > 0 {
			o.AttrTTL = attrTTL
		}
	})
	return e, blocks
}

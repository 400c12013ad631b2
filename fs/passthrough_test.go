package fs_test

import (
	"bytes"
	"errors"
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
	blocks, err := cache.New(cache.Options{Memory: 4 * mib, Dir: t.TempDir(), DirSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blocks.Close() })
	e := mountWith(t, mib, func(o *fs.Options, _ *fusefs.Options) {
		o.Blocks = blocks
		o.Passthrough = true
	})
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
// passed through; an open of a new version while an old one is passed
// through is refused (EBUSY: the kernel would fail it), and reads the new
// version once the old one is closed.
func TestPassthroughMixedOpens(t *testing.T) {
	blocks, err := cache.New(cache.Options{Memory: 4 * mib, Dir: t.TempDir(), DirSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blocks.Close() })
	e := mountWith(t, mib, func(o *fs.Options, _ *fusefs.Options) {
		o.Blocks = blocks
		o.Passthrough = true
	})
	data := randBytes(2*mib+5, 52)
	e.put(t, "vm.img", data, nil)
	p := e.dir + "/vm.img"
	check := func(f *os.File, want []byte) {
		t.Helper()
		got := make([]byte, len(want)+1)
		if n, _ := f.ReadAt(got, 0); n != len(want) || !bytes.Equal(got[:n], want) {
			t.Fatalf("read %d bytes, want %d (or other bytes)", n, len(want))
		}
	}
	cached, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer cached.Close() // before the unmount, also after a t.Fatal
	check(cached, data)
	for i := 0; blocks.Stats().DiskWholeImages != 1; i++ {
		if i > 500 {
			t.Fatal("not whole")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second, err := os.Open(p)
	if err != nil {
		t.Fatalf("an open next to one through the page cache: %v", err)
	}
	defer second.Close()
	check(second, data)
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
	check(pt, data)
	if e.root.Stats().Passthroughs != 1 {
		t.Fatal("not passed through once alone")
	}
	data2 := randBytes(len(data)+7, 53)
	e.put(t, "vm.img", data2, nil)
	// The kernel takes no open of another file for this inode meanwhile:
	// refused clearly, for reading and for writing.
	if f, err := os.Open(p); !errors.Is(err, syscall.EBUSY) {
		if err == nil {
			f.Close()
		}
		t.Fatalf("an open of a new version next to a passed-through one: %v, want EBUSY", err)
	}
	if f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0); !errors.Is(err, syscall.EBUSY) {
		if err == nil {
			f.Close()
		}
		t.Fatalf("an open for writing next to a passed-through one: %v, want EBUSY", err)
	}
	check(pt, data) // the old open still reads its version
	pt.Close()
	other, err := os.Open(p)
	if err != nil {
		t.Fatalf("an open of the new version once the old one is closed: %v", err)
	}
	defer other.Close()
	check(other, data2)
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

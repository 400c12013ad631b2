package cache

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// blockFiles counts the block files under dir.
func blockFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(dir, diskSubdir), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestDiskFillsInPlace: a version read from its start, or warmed, is
// written into its whole file in place: not one block file, and sealed
// once its last block is in; a reopen reads it with no fetch.
func TestDiskFillsInPlace(t *testing.T) {
	for _, warm := range []bool{false, true} {
		dir := t.TempDir()
		src := &memSource{data: randBytes(2*mib+5, 40)}
		size := int64(len(src.data))
		o := Options{BlockSize: 64 * kib, Memory: 256 * kib, Dir: dir, DirSize: 64 * mib}
		b := newBlocks(t, o)
		var inFile, inBlocks atomic.Int64
		real := b.disk.writeFile
		b.disk.writeFile = func(j writeJob, fl *filling) (int64, error) {
			if fl != nil {
				inFile.Add(1)
			} else {
				inBlocks.Add(1)
			}
			return real(j, fl)
		}
		f := b.Open("v", size, src)
		if warm {
			if _, err := f.Warm(t.Context(), 0, f.Blocks()); err != nil {
				t.Fatal(err)
			}
		} else {
			for off := int64(0); off < size; off += 128 * kib {
				readAt(t, f, src.data, off, 128*kib)
			}
		}
		waitWhole(t, b, 1)
		if inBlocks.Load() != 0 || inFile.Load() != f.Blocks() {
			t.Errorf("warm %v: %d blocks written to block files, %d into the whole file, of %d", warm, inBlocks.Load(), inFile.Load(), f.Blocks())
		}
		wf, ok := f.Whole()
		if !ok {
			t.Fatalf("warm %v: no whole file", warm)
		}
		got, _ := os.ReadFile(wf.Name())
		wf.Close()
		if !bytes.Equal(got, src.data) {
			t.Fatalf("warm %v: the whole file is not the image", warm)
		}
		if _, err := os.Stat(b.disk.wholePath(f.hash) + fillSuffix); !os.IsNotExist(err) {
			t.Errorf("warm %v: the fill log is left after the seal: %v", warm, err)
		}
		if st := b.Stats(); st.DiskWrites != f.Blocks() || st.DiskBytes < size || st.DiskBytes > size+4*kib {
			t.Errorf("warm %v: %+v", warm, st)
		}
		b.Close()
		b = newBlocks(t, o)
		calls := src.calls()
		readAt(t, b.Open("v", size, src), src.data, 0, size)
		if src.calls() != calls {
			t.Errorf("warm %v: %d fetches after a reopen", warm, src.calls()-calls)
		}
		b.Close()
	}
}

// tornFill leaves in a cache directory the fill of a 17-block version
// cut short after blocks 0-7, as a crash may: block 5's data lost (its
// record written) and a torn record at the log's end. It returns the
// cache's options and the version's source.
func tornFill(t *testing.T) (Options, *memSource) {
	t.Helper()
	dir := t.TempDir()
	src := &memSource{data: randBytes(1*mib+5, 41)}
	size, bs := int64(len(src.data)), int64(64*kib)
	o := Options{BlockSize: bs, Memory: 128 * kib, Dir: dir, DirSize: 64 * mib}
	b := newBlocks(t, o)
	f := b.Open("v", size, src)
	readAt(t, f, src.data, 0, 8*bs) // blocks 0-7 of 17
	b.Close()
	p := b.disk.wholePath(f.hash)
	if n := blockFiles(t, dir); n != 0 {
		t.Fatalf("%d block files written", n)
	}
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteAt(make([]byte, bs), 5*bs)
	fh.Close()
	lf, err := os.OpenFile(p+fillSuffix, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	lf.Write(encodeFillRecord(9, 1)[:7])
	lf.Close()
	return o, src
}

// checkWholeFile checks that f's whole file is sealed and holds data.
func checkWholeFile(t *testing.T, b *Blocks, f *File, data []byte) {
	t.Helper()
	waitWhole(t, b, 1)
	wf, ok := f.Whole()
	if !ok {
		t.Fatal("no whole file after the resumed fill")
	}
	got, _ := os.ReadFile(wf.Name())
	wf.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("the resumed whole file is not the image")
	}
}

// TestDiskFillResumes: a fill cut short (a close, or a crash) resumes at
// the next start: the blocks in it are served, those it lacks fetched;
// a block whose data did not reach the disk (its record did) fails its
// CRC and is fetched again, never served; a torn record at the log's end
// is ignored. The last block seals it.
func TestDiskFillResumes(t *testing.T) {
	o, src := tornFill(t)
	size, bs := int64(len(src.data)), o.BlockSize

	b := newBlocks(t, o)
	if st := b.Stats(); st.DiskBytes < 8*bs || st.DiskBytes > 8*bs+kib || st.DiskWholeImages != 0 {
		t.Errorf("a partial whole file after a reopen: %+v", st)
	}
	f := b.Open("v", size, src)
	calls, fetched := src.calls(), src.fetched()
	readAt(t, f, src.data, 0, size)
	if got, want := src.fetched()-fetched, size-7*bs; got != want {
		t.Errorf("fetched %d bytes after the resume, want %d (blocks 5, 8-16); %d calls", got, want, src.calls()-calls)
	}
	if st := b.Stats(); st.DiskCorrupt != 1 || st.DiskHits != 7 {
		t.Errorf("after the resume: %+v, want 1 corrupt block and 7 disk hits", st)
	}
	checkWholeFile(t, b, f, src.data)
	b.Close()
}

// TestDiskFillChecksBeforeSeal: when the blocks a resumed fill lacked come
// in before anyone read the ones it had (a read of the image's end, or
// fetches that overtake the disk loads), the assembly reads those back
// before it seals: the bad one is dropped, not sealed, and fetched when
// read. (It was sealed with block 5's lost data, and served from the
// whole file, about one run in twenty.)
func TestDiskFillChecksBeforeSeal(t *testing.T) {
	o, src := tornFill(t)
	size, bs := int64(len(src.data)), o.BlockSize

	b := newBlocks(t, o)
	f := b.Open("v", size, src)
	readAt(t, f, src.data, 8*bs, size-8*bs) // the blocks the fill lacks
	for i := 0; b.Stats().DiskCorrupt == 0; i++ {
		if i > 500 {
			t.Fatalf("the assembly found no bad block: %+v", b.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := b.Stats(); st.DiskWholeImages != 0 || st.DiskCorrupt != 1 {
		t.Fatalf("sealed with a bad block: %+v", st)
	}
	fetched := src.fetched()
	readAt(t, f, src.data, 0, size)
	if got := src.fetched() - fetched; got != bs {
		t.Errorf("fetched %d bytes, want block 5's %d", got, bs)
	}
	checkWholeFile(t, b, f, src.data)
	if st := b.Stats(); st.DiskCorrupt != 1 {
		t.Errorf("%d corrupt blocks counted, want 1", st.DiskCorrupt)
	}
	b.Close()
}

// TestDiskFillBudget: a partial whole file counts its blocks present
// against the limit and is evicted whole, least recently used first.
func TestDiskFillBudget(t *testing.T) {
	dir := t.TempDir()
	bs := int64(64 * kib)
	o := Options{BlockSize: bs, Memory: 128 * kib, Dir: dir, DirSize: 24 * bs}
	b := newBlocks(t, o)
	a := &memSource{data: randBytes(int(16*bs), 42)}
	c := &memSource{data: randBytes(int(16*bs), 43)}
	fa := b.Open("a", 16*bs, a)
	readAt(t, fa, a.data, 0, 10*bs) // partial: 10 blocks
	for i := 0; b.Stats().DiskWrites < 10; i++ {
		if i > 500 {
			t.Fatalf("blocks not written: %+v", b.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := b.Stats(); st.DiskBytes < 10*bs || st.DiskBytes > 10*bs+kib {
		t.Errorf("a partial file of 10 blocks counts %d bytes", st.DiskBytes)
	}
	fc := b.Open("c", 16*bs, c)
	readAt(t, fc, c.data, 0, 16*bs) // 10 + 16 blocks > 24: a goes
	waitWhole(t, b, 1)
	st := b.Stats()
	if st.DiskBytes > o.DirSize || st.DiskBytes < 16*bs {
		t.Errorf("disk holds %d bytes, limit %d", st.DiskBytes, o.DirSize)
	}
	for _, sfx := range []string{"", fillSuffix} {
		if _, err := os.Stat(b.disk.wholePath(fa.hash) + sfx); !os.IsNotExist(err) {
			t.Errorf("the evicted partial file %q is still there: %v", sfx, err)
		}
	}
	if _, ok := fc.Whole(); !ok {
		t.Error("the newest image is not whole")
	}
	b.disk.mu.Lock()
	if len(b.disk.removing) != 0 {
		t.Errorf("removals not accounted for: %v", b.disk.removing)
	}
	b.disk.mu.Unlock()
	b.Close()
}

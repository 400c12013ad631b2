package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestDiskSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	src := &memSource{data: randBytes(1*mib+5, 8)}
	o := Options{BlockSize: 64 * kib, Memory: 8 * mib, Dir: dir, DirSize: 64 * mib}
	b := newBlocks(t, o)
	f := b.Open("v", int64(len(src.data)), src)
	readAt(t, f, src.data, 0, int64(len(src.data)))
	b.Close() // waits for the writers
	if st := b.Stats(); st.DiskWrites != 17 || st.DiskBytes < int64(len(src.data)) {
		t.Fatalf("after a full read: %+v", st)
	}
	calls := src.calls()

	b2 := newBlocks(t, o)
	if st := b2.Stats(); st.DiskBytes == 0 {
		t.Fatal("the reopened cache indexed nothing")
	}
	f2 := b2.Open("v", int64(len(src.data)), src)
	readAt(t, f2, src.data, 0, int64(len(src.data)))
	if src.calls() != calls {
		t.Errorf("%d fetches after the reopen, want none", src.calls()-calls)
	}
	if st := b2.Stats(); st.DiskHits != 17 {
		t.Errorf("disk hits %d, want 17", st.DiskHits)
	}
	// Another version of the object: nothing on disk applies.
	readAt(t, b2.Open("v-new", int64(len(src.data)), src), src.data, 0, 10)
	if src.calls() != calls+1 {
		t.Error("another version was served from disk")
	}
}

func TestDiskRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	// Five blocks, blocks 1 to 4 read: never whole and never read from
	// its start (which would fill its whole file), so its block files stay.
	src := &memSource{data: randBytes(256*kib+1, 9)}
	o := Options{BlockSize: 64 * kib, Memory: 8 * mib, Dir: dir, DirSize: 64 * mib}
	b := newBlocks(t, o)
	readAt(t, b.Open("v", int64(len(src.data)), src), src.data, 64*kib, 192*kib+1)
	b.Close()

	f := b.Open("v", int64(len(src.data)), src)
	file := func(idx int64) string { return filepath.Join(dir, diskSubdir, blockName(diskKey{f.hash, idx})) }
	// Block 1: a flipped data byte. Block 2: truncated (a torn write).
	// Block 3: another version's block 3 under this name.
	raw, err := os.ReadFile(file(1))
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 1
	os.WriteFile(file(1), raw, 0o600)
	os.Truncate(file(2), 100)
	other := b.Open("w", int64(len(src.data)), src)
	moved := filepath.Join(dir, diskSubdir, blockName(diskKey{other.hash, 3}))
	os.MkdirAll(filepath.Dir(moved), 0o700)
	if err := os.Rename(file(3), moved); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file(4)+tmpMarker+"123", []byte("partial"), 0o600)

	b2 := newBlocks(t, o)
	if _, err := os.Stat(file(4) + tmpMarker + "123"); !errors.Is(err, os.ErrNotExist) {
		t.Error("a stray temporary file survived the start")
	}
	calls := src.calls()
	f2 := b2.Open("v", int64(len(src.data)), src)
	readAt(t, f2, src.data, 64*kib, 192*kib+1)
	if got := src.calls() - calls; got != 3 { // blocks 1 and 2 (bad), 3 (missing); 4 from disk
		t.Errorf("%d fetches, want 3", got)
	}
	readAt(t, b2.Open("w", int64(len(src.data)), src), src.data, 3*64*kib, 10)
	if st := b2.Stats(); st.DiskCorrupt != 3 || st.DiskHits != 1 {
		t.Errorf("stats %+v, want 3 rejected files and 1 disk hit", st)
	}
}

func TestDiskLimitEvictsOldest(t *testing.T) {
	dir := t.TempDir()
	bs := int64(64 * kib)
	src := &memSource{data: randBytes(int(20*bs), 10)}
	o := Options{BlockSize: bs, Memory: 2 * bs, Dir: dir, DirSize: 8 * (bs + 200)}
	b := newBlocks(t, o)
	f := b.Open("v", int64(len(src.data)), src)
	for i := range int64(20) {
		readAt(t, f, src.data, i*bs, 10)
	}
	b.Close()
	st := b.Stats()
	if st.DiskBytes > o.DirSize || st.DiskBytes < 7*bs {
		t.Errorf("disk holds %d bytes, limit %d", st.DiskBytes, o.DirSize)
	}
	n := 0
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() && de.Name() != "lock" {
			n++
		}
		return nil
	})
	if n != 8 {
		t.Errorf("%d block files on disk, want 8", n)
	}
	b2 := newBlocks(t, o)
	calls := src.calls()
	readAt(t, b2.Open("v", int64(len(src.data)), src), src.data, 19*bs, 10)
	if src.calls() != calls {
		t.Error("the newest block was not kept")
	}
}

func TestDiskLocked(t *testing.T) {
	dir := t.TempDir()
	newBlocks(t, Options{Dir: dir, DirSize: mib})
	_, err := New(Options{Dir: dir, DirSize: mib})
	if err == nil || !strings.Contains(err.Error(), "in use by another imagefs") {
		t.Fatalf("second cache on one directory: %v", err)
	}
}

// TestDiskFull: ENOSPC while writing blocks is logged once; reads go on.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 256 * kib, Dir: dir, DirSize: 64 * mib, Log: log})
	b.disk.writeFile = func(j writeJob, fl *filling) (int64, error) {
		return 0, &os.PathError{Op: "write", Path: "block", Err: syscall.ENOSPC}
	}
	src := &memSource{data: randBytes(2*mib, 11)}
	f := b.Open("v", int64(len(src.data)), src)
	readAt(t, f, src.data, 0, int64(len(src.data)))
	readAt(t, f, src.data, 0, int64(len(src.data))) // evicted from memory: fetched again
	b.Close()
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "block cache directory is full"); n != 1 {
		t.Errorf("disk full logged %d times, want once:\n%s", n, logs.String())
	}
	if st := b.Stats(); st.DiskWrites != 0 || st.DiskWriteDropped == 0 {
		t.Errorf("stats %+v", st)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestDiskBusyKeepsEveryBlock: several files read whole at once while the
// disk is slow are on disk entire afterwards: the fetches wait for the
// writers instead of dropping blocks, and a reopened cache fetches
// nothing.
func TestDiskBusyKeepsEveryBlock(t *testing.T) {
	dir := t.TempDir()
	o := Options{BlockSize: 64 * kib, Memory: 4 * mib, Dir: dir, DirSize: 256 * mib}
	b := newBlocks(t, o)
	write := b.disk.writeFile
	b.disk.writeFile = func(j writeJob, fl *filling) (int64, error) {
		time.Sleep(time.Millisecond) // a busy disk: the queue fills up
		return write(j, fl)
	}
	const files, size = 4, 8*mib + 3
	srcs := make([]*memSource, files)
	var wg sync.WaitGroup
	errs := make(chan error, files)
	for i := range srcs {
		srcs[i] = &memSource{data: randBytes(size, uint64(20+i))}
		f := b.Open(fmt.Sprintf("v%d", i), size, srcs[i])
		wg.Go(func() {
			for off := int64(0); off < size; off += 128 * kib {
				p := make([]byte, 128*kib)
				n, err := f.ReadAt(t.Context(), p, off)
				if err != nil && !errors.Is(err, io.EOF) || !bytes.Equal(p[:n], srcs[i].data[off:off+int64(n)]) {
					errs <- fmt.Errorf("file %d at %d: %d bytes, %v", i, off, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	b.Close()
	blocks := int64(files * ((size + o.BlockSize - 1) / o.BlockSize))
	st := b.Stats()
	if st.DiskWrites != blocks || st.DiskWriteDropped != 0 {
		t.Fatalf("after whole reads on a busy disk: %d of %d blocks written, %d dropped", st.DiskWrites, blocks, st.DiskWriteDropped)
	}
	if st.DiskWriteWaits == 0 {
		t.Error("the disk never made a fetch wait: the test did not make it busy")
	}
	b2 := newBlocks(t, o)
	for i, src := range srcs {
		calls := src.calls()
		readAt(t, b2.Open(fmt.Sprintf("v%d", i), size, src), src.data, 0, size)
		if src.calls() != calls {
			t.Errorf("file %d: %d fetches after the reopen, want none", i, src.calls()-calls)
		}
	}
}

// TestDiskStuckDropsCounted: a disk whose writes do not return makes a
// fetch wait storeWait, then the block is dropped, counted and logged
// once; reads go on.
func TestDiskStuckDropsCounted(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 64 * mib, Dir: t.TempDir(), DirSize: 64 * mib, Log: log})
	release := make(chan struct{})
	b.disk.storeWait = 20 * time.Millisecond
	b.disk.writeFile = func(j writeJob, fl *filling) (int64, error) {
		<-release
		return 0, errors.New("stuck")
	}
	src := &memSource{data: randBytes(8*mib, 12)}
	readAt(t, b.Open("v", int64(len(src.data)), src), src.data, 0, int64(len(src.data)))
	// 128 blocks: about 2 taken by the stuck writers, 64 queued, the rest
	// dropped.
	if st := b.Stats(); st.DiskWriteDropped < 128-4-writeQueue || st.DiskWriteDropped > 128-writeQueue {
		t.Errorf("dropped %d blocks, want about %d", st.DiskWriteDropped, 128-2-writeQueue)
	}
	close(release)
	b.Close()
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "block cache directory too slow"); n != 1 {
		t.Errorf("the slow disk logged %d times, want once:\n%s", n, logs.String())
	}
}

// waitWhole waits until the cache holds n whole images.
func waitWhole(t *testing.T, b *Blocks, n int64) {
	t.Helper()
	for range 500 {
		if b.Stats().DiskWholeImages == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("whole images %d, want %d", b.Stats().DiskWholeImages, n)
}

// TestDiskWholeImage: a version read whole is assembled into one file of
// its bytes, which File.Whole opens and which survives a reopen; its block
// files are gone. A whole file changed behind the cache's back is
// discarded at open and at the next start, and read from the source again.
func TestDiskWholeImage(t *testing.T) {
	dir := t.TempDir()
	src := &memSource{data: randBytes(1*mib+5, 30)}
	size := int64(len(src.data))
	o := Options{BlockSize: 64 * kib, Memory: 128 * kib, Dir: dir, DirSize: 64 * mib}
	b := newBlocks(t, o)
	f := b.Open("v", size, src)
	if _, ok := f.Whole(); ok {
		t.Fatal("a version never read is whole")
	}
	readAt(t, f, src.data, 0, size)
	waitWhole(t, b, 1)
	wf, ok := f.Whole()
	if !ok {
		t.Fatal("no whole file after the version was read whole")
	}
	got, err := io.ReadAll(wf)
	wf.Close()
	if err != nil || !bytes.Equal(got, src.data) {
		t.Fatalf("the whole file holds %d bytes (%v), not the image", len(got), err)
	}
	if _, ok := b.Open("v2", size, src).Whole(); ok {
		t.Error("another version is whole")
	}
	if _, ok := b.Open("v", size+1, src).Whole(); ok {
		t.Error("a version of another size is whole")
	}
	b.Close()
	blocks, _ := filepath.Glob(filepath.Join(dir, diskSubdir, "*", "*"))
	if len(blocks) != 0 {
		t.Errorf("block files left next to the whole file: %v", blocks)
	}

	b = newBlocks(t, o)
	f = b.Open("v", size, src)
	calls := src.calls()
	readAt(t, f, src.data, 0, size)
	if src.calls() != calls {
		t.Errorf("%d fetches of a whole image after a reopen", src.calls()-calls)
	}
	if st := b.Stats(); st.DiskWholeImages != 1 || st.DiskHits != 17 || st.DiskBytes < size {
		t.Errorf("after a reopen: %+v", st)
	}
	// Damage it while the cache is open: the daemon's own loads check
	// every block's CRC, and an open for the kernel checks the file.
	p := b.disk.wholePath(f.hash)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	raw[3*64*kib+7] ^= 1
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	readAt(t, f, src.data, 3*64*kib, 64*kib)
	if src.calls() != calls+1 || b.Stats().DiskCorrupt != 1 || b.Stats().DiskWholeImages != 0 {
		t.Errorf("a damaged whole file: %d fetches, %+v", src.calls()-calls, b.Stats())
	}
	if _, ok := f.Whole(); ok {
		t.Error("a damaged whole file is handed out")
	}
	b.Close()
}

// TestDiskWholeChangedWhileClosed: a whole file changed while no cache
// had it open (a flipped byte: its ctime moves) is discarded at the start,
// and the image is fetched again.
func TestDiskWholeChangedWhileClosed(t *testing.T) {
	dir := t.TempDir()
	src := &memSource{data: randBytes(512*kib, 31)}
	size := int64(len(src.data))
	o := Options{BlockSize: 64 * kib, Memory: 128 * kib, Dir: dir, DirSize: 64 * mib}
	b := newBlocks(t, o)
	f := b.Open("v", size, src)
	readAt(t, f, src.data, 0, size)
	waitWhole(t, b, 1)
	p := b.disk.wholePath(f.hash)
	b.Close()
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	one := []byte{0}
	fh.ReadAt(one, 100)
	one[0] ^= 0x80
	fh.WriteAt(one, 100)
	fh.Close()

	var logs bytes.Buffer
	var mu sync.Mutex
	o.Log = slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	b = newBlocks(t, o)
	if st := b.Stats(); st.DiskWholeImages != 0 || st.DiskCorrupt != 1 {
		t.Errorf("a changed whole file was kept: %+v", st)
	}
	calls := src.calls()
	readAt(t, b.Open("v", size, src), src.data, 0, size)
	if src.calls() == calls {
		t.Error("the image was not fetched again")
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "discarding a whole-image cache file") {
		t.Errorf("not logged:\n%s", logs.String())
	}
}

package cache

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A warm leaves every block on disk, even when the disk writers' queue
// is full, skips what is cached already, and a reopened cache serves it
// with no fetch.
func TestWarmFillsDisk(t *testing.T) {
	dir := t.TempDir()
	// A tiny memory tier: the blocks must come from disk afterwards.
	b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 1 * mib, Dir: dir, DirSize: 64 * mib})
	src := &memSource{data: randBytes(8*mib+5*kib, 21)} // a short last block
	f := b.Open("v", int64(len(src.data)), src)
	// The disk writes are slow, so that the writers' queue overflows: the
	// warm writes itself and must not rely on it.
	var mu sync.Mutex
	real := b.disk.writeFile
	b.disk.writeFile = func(j writeJob, fl *filling) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		time.Sleep(time.Millisecond)
		return real(j, fl)
	}
	readAt(t, f, src.data, 128*kib, 64*kib) // one block cached by a read first
	var wg sync.WaitGroup
	for c := int64(0); c < f.Blocks(); c += 8 {
		wg.Go(func() {
			if _, err := f.Warm(t.Context(), c, c+8); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for idx := range f.Blocks() {
		if !f.Cached(idx) {
			t.Fatalf("block %d not on disk after the warm", idx)
		}
	}
	// (The block read first may be fetched again: evicted from memory
	// before its queued disk write.)
	if got, want := src.fetched(), int64(len(src.data))+64*kib; got > want {
		t.Errorf("fetched %d bytes for a %d-byte file", got, want)
	}
	// A warmed image is assembled into its whole file, as one read whole.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if w, ok := f.Whole(); ok {
			w.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the warmed image was not assembled into a whole file within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	calls := src.calls()
	if n, err := f.Warm(t.Context(), 0, f.Blocks()); err != nil || n != 0 || src.calls() != calls {
		t.Errorf("second warm fetched %d bytes (%v), %d calls", n, err, src.calls()-calls)
	}
	b.Close()

	b2 := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 1 * mib, Dir: dir, DirSize: 64 * mib})
	src2 := &memSource{data: src.data}
	f2 := b2.Open("v", int64(len(src.data)), src2)
	readAt(t, f2, src.data, 0, int64(len(src.data)))
	if src2.calls() != 0 {
		t.Errorf("read after warm and reopen fetched %d times", src2.calls())
	}
}

// A warm that cannot write says so, and without a directory it refuses.
func TestWarmReportsUnwritten(t *testing.T) {
	b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 4 * mib, Dir: t.TempDir(), DirSize: 64 * mib})
	b.disk.writeFile = func(j writeJob, fl *filling) (int64, error) {
		return 0, &os.PathError{Op: "write", Path: "block", Err: syscall.EIO}
	}
	src := &memSource{data: randBytes(1*mib, 22)}
	f := b.Open("v", int64(len(src.data)), src)
	if _, err := f.Warm(t.Context(), 0, f.Blocks()); !errors.Is(err, ErrNotPersisted) {
		t.Errorf("warm on a failing disk: %v, want ErrNotPersisted", err)
	}
	m := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 4 * mib})
	if _, err := m.Open("v", 1*mib, src).Warm(t.Context(), 0, 1); !errors.Is(err, ErrNoDisk) {
		t.Errorf("warm without a directory: %v, want ErrNoDisk", err)
	}
}

// A warm writes each block file once: the fetch's queued write and the
// warm's own do not both write it.
func TestWarmWritesEachBlockOnce(t *testing.T) {
	b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 64 * mib, Dir: t.TempDir(), DirSize: 64 * mib})
	var mu sync.Mutex
	writes := map[diskKey]int{}
	real := b.disk.writeFile
	b.disk.writeFile = func(j writeJob, fl *filling) (int64, error) {
		mu.Lock()
		writes[j.k]++
		mu.Unlock()
		time.Sleep(100 * time.Microsecond) // a disk, not memory
		return real(j, fl)
	}
	src := &memSource{data: randBytes(16*mib, 23)}
	f := b.Open("v", int64(len(src.data)), src)
	var wg sync.WaitGroup
	for c := int64(0); c < f.Blocks(); c += 32 {
		wg.Go(func() {
			if _, err := f.Warm(t.Context(), c, c+32); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	b.Close()
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for p, n := range writes {
		total += n
		if n > 1 {
			t.Errorf("block %d written %d times", p.idx, n)
		}
	}
	if total != int(f.Blocks()) {
		t.Errorf("%d blocks written for %d blocks", total, f.Blocks())
	}
}

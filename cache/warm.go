package cache

import (
	"context"
	"errors"
	"fmt"
)

// Warming: fetching a whole version into the disk tier ahead of its
// readers (imagefs warm). A warm goes through the fetch engine like a
// read (single-flight with the readers, one ranged GET per run of missing
// blocks), then writes each block to disk itself and waits for the write,
// rather than queueing it: the queue drops blocks when the writers fall
// behind, and a warm must say truthfully what is on disk. A warmed version
// is written straight into its whole-image file (sparse.go).

// ErrNoDisk: warming needs the disk tier.
var ErrNoDisk = errors.New("the block cache has no directory: warming needs --cache-dir")

// ErrNotPersisted: a block could not be written to the disk tier (the
// disk is full, a write failed or the tier is over its size).
var ErrNotPersisted = errors.New("block not written to the cache directory")

// Cached reports whether block idx of the file is in the disk tier (with
// no disk tier: in memory).
func (f *File) Cached(idx int64) bool {
	b := f.b
	if f.disk {
		return b.disk.has(f.diskKey(idx))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mem.has(bkey{f.key, idx})
}

// Blocks is the number of blocks of the file.
func (f *File) Blocks() int64 {
	bs := f.b.o.BlockSize
	return (f.size + bs - 1) / bs
}

// Warm brings blocks [first, last) of the file into the disk tier and
// returns the bytes it fetched from the source. Blocks already on disk are
// skipped; blocks in memory or in flight are written from there. It
// returns when every block is on disk, or with the first error
// (ErrNotPersisted if a block could not be written).
func (f *File) Warm(ctx context.Context, first, last int64) (fetched int64, err error) {
	b := f.b
	if !f.disk {
		return 0, ErrNoDisk
	}
	first, last = max(first, 0), min(last, f.Blocks())
	if first >= last {
		return 0, nil
	}
	bs := b.o.BlockSize
	r := f.newRead(first*bs, (last-first)*bs)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errClosed
	}
	b.wg.Add(1) // Close waits for the disk writes below
	defer b.wg.Done()
	b.disk.startFill(f.hash, f.key, f.size) // into its whole file, in place
	miss, _ := r.hitsLocked()               // blocks on disk are left alone
	r.fetchLocked(miss, 0)
	b.mu.Unlock()
	for _, idx := range miss {
		fetched += f.blockLen(idx)
	}
	defer r.release()
	for i, rb := range r.blocks {
		idx := first + int64(i)
		var data []byte
		if rb.buf != nil {
			data = rb.buf.data
		}
		switch {
		case data == nil && rb.wait == nil:
			continue // on disk
		case err != nil:
			if rb.wait != nil {
				b.unwait(rb.wait)
			}
			continue
		case data == nil:
			data, err = b.wait(ctx, rb.wait, 0, f.blockLen(idx))
			if err != nil {
				continue
			}
		}
		k := f.diskKey(idx)
		if b.disk.has(k) {
			continue // the fetch's own queued write was faster
		}
		b.disk.write(writeJob{key: f.key, k: k, data: data, size: f.size})
		if !b.disk.has(k) {
			err = fmt.Errorf("block %d: %w", idx, ErrNotPersisted)
		}
	}
	return fetched, err
}

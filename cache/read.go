package cache

import (
	"context"
	"errors"
	"io"
)

var errClosed = errors.New("block cache closed")

// ReadAt reads len(p) bytes at off through the cache, following the
// io.ReaderAt contract (io.EOF when the file ends before p is full). ctx
// only bounds the wait: fetches started for the read keep going for other
// readers.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if off >= f.size {
		return 0, io.EOF
	}
	r := f.newRead(off, int64(len(p)))
	b := f.b
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errClosed
	}
	miss, onDisk := r.hitsLocked()
	r.fetchLocked(miss, r.startOf(miss))
	b.mu.Unlock()
	r.loadDisk(onDisk)
	return r.collect(ctx, p)
}

// blockRead is one ReadAt of bytes [off, end): the blocks it touches,
// from first on.
type blockRead struct {
	f        *File
	off, end int64
	first    int64
	blocks   []readBlock
}

// readBlock is one block of a read: its bytes in hand, or the block on its
// way (with one interest in its fetch). Either way the read is a user of
// the block's buffer until it releases it (release).
type readBlock struct {
	buf  *buffer
	wait *pending
}

// release ends the read's use of its blocks' buffers.
func (r *blockRead) release() {
	b := r.f.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, rb := range r.blocks {
		switch {
		case rb.buf != nil:
			b.releaseLocked(rb.buf)
		case rb.wait != nil:
			b.releaseLocked(rb.wait.buf)
		}
	}
}

func (f *File) newRead(off, n int64) *blockRead {
	end := min(off+n, f.size)
	bs := f.b.o.BlockSize
	first, last := off/bs, (end-1)/bs
	return &blockRead{f: f, off: off, end: end, first: first, blocks: make([]readBlock, last-first+1)}
}

// hitsLocked takes the blocks in memory (hits) and joins the fetches of
// the blocks in flight. It returns the others: those to fetch (miss) and
// those to load from disk.
func (r *blockRead) hitsLocked() (miss, onDisk []int64) {
	f, b := r.f, r.f.b
	for i := range r.blocks {
		idx := r.first + int64(i)
		k := bkey{f.key, idx}
		if buf := b.mem.get(k); buf != nil {
			b.useLocked(buf)
			r.blocks[i].buf = buf
			b.stats.MemHits++
			continue
		}
		if pd := b.inflight[k]; pd != nil {
			r.joinLocked(pd)
			continue
		}
		if f.disk && b.disk.has(f.diskKey(idx)) {
			onDisk = append(onDisk, idx)
			continue
		}
		miss = append(miss, idx)
	}
	return miss, onDisk
}

// startOf is where the fetch of the missing blocks begins in its first
// block: where the read does if that is the read's first block, so that
// the reader waits for its bytes, not for the whole block.
func (r *blockRead) startOf(miss []int64) int64 {
	if len(miss) > 0 && miss[0] == r.first {
		return r.off - r.first*r.f.b.o.BlockSize
	}
	return 0
}

// fetchLocked starts the fetches of the missing blocks (one per run,
// beginning at byte from of the first block) and joins them.
func (r *blockRead) fetchLocked(miss []int64, from int64) {
	for _, fe := range r.f.startRunsLocked(miss, from, false) {
		for _, pd := range fe.blocks {
			r.joinLocked(pd)
		}
	}
}

// joinLocked makes the read wait for pd, with one interest in its fetch.
func (r *blockRead) joinLocked(pd *pending) {
	pd.fe.refs++
	r.f.b.useLocked(pd.buf)
	r.blocks[pd.k.idx-r.first].wait = pd
}

// loadDisk reads the blocks on disk (disk hits) into memory. A block
// whose file turns out missing or bad is a miss after all: taken from
// memory or joined if another reader brought it meanwhile, else fetched.
func (r *blockRead) loadDisk(onDisk []int64) {
	f, b := r.f, r.f.b
	for _, idx := range onDisk {
		i, k := idx-r.first, bkey{f.key, idx}
		if data := b.disk.load(f.diskKey(idx), f.key, f.blockLen(idx), f.size); data != nil {
			buf := &buffer{data: data, users: 1}
			r.blocks[i].buf = buf
			b.mu.Lock()
			b.stats.DiskHits++
			b.mem.put(k, buf)
			b.mu.Unlock()
			continue
		}
		b.mu.Lock()
		if buf := b.mem.peek(k); buf != nil {
			b.useLocked(buf)
			r.blocks[i].buf = buf
		} else if pd := b.inflight[k]; pd != nil {
			r.joinLocked(pd)
		} else {
			r.fetchLocked([]int64{idx}, 0)
		}
		b.mu.Unlock()
	}
}

// collect copies the read's bytes into p in order, waiting for the blocks
// on their way. After an error it waits no more: it drops its interest in
// the blocks still to come. It releases the blocks' buffers.
func (r *blockRead) collect(ctx context.Context, p []byte) (int, error) {
	defer r.release()
	b := r.f.b
	bs := b.o.BlockSize
	n := 0
	var err error
	for i, rb := range r.blocks {
		start := (r.first + int64(i)) * bs
		lo, hi := max(r.off, start)-start, min(r.end, start+bs)-start
		var part []byte
		switch {
		case rb.buf != nil:
			part = rb.buf.data[lo:hi]
		case err == nil:
			part, err = b.wait(ctx, rb.wait, lo, hi)
		default:
			b.unwait(rb.wait) // gave up earlier: drop the interest
		}
		if err == nil {
			n += copy(p[n:], part)
		}
	}
	if err != nil {
		return n, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

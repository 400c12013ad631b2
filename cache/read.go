package cache

import (
	"context"
	"errors"
	"io"
)

// ReadAt reads len(p) bytes at off through the cache, following the
// io.ReaderAt contract (io.EOF when the file ends before p is full). ctx
// only bounds the wait: fetches started for the read keep going for other
// readers.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off >= f.size || len(p) == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), f.size)
	bs := f.b.o.BlockSize
	first, last := off/bs, (end-1)/bs
	got := make([][]byte, last-first+1)
	waits := make([]*pending, last-first+1)
	b := f.b

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errors.New("block cache closed")
	}
	var onDisk []int64
	var miss []int64
	for idx := first; idx <= last; idx++ {
		k := bkey{f.key, idx}
		if data := b.mem.get(k); data != nil {
			got[idx-first] = data
			b.stats.MemHits++
			continue
		}
		if pd := b.inflight[k]; pd != nil {
			pd.fe.refs++
			waits[idx-first] = pd
			continue
		}
		if f.disk && b.disk.has(f.diskKey(idx)) {
			onDisk = append(onDisk, idx)
			continue
		}
		miss = append(miss, idx)
	}
	// A run that starts with the read's first block starts where the read
	// does: the reader waits for its bytes, not for the whole block.
	var from int64
	if len(miss) > 0 && miss[0] == first {
		from = off - first*bs
	}
	for _, fe := range f.startRunsFromLocked(miss, from, false) {
		for _, pd := range fe.blocks {
			pd.fe.refs++
			waits[pd.k.idx-first] = pd
		}
	}
	b.mu.Unlock()

	for _, idx := range onDisk {
		if data := b.disk.load(f.diskKey(idx), f.key, f.blockLen(idx)); data != nil {
			got[idx-first] = data
			b.mu.Lock()
			b.stats.DiskHits++
			b.mem.put(bkey{f.key, idx}, data)
			b.mu.Unlock()
			continue
		}
		b.mu.Lock()
		k := bkey{f.key, idx}
		switch {
		case b.mem.has(k):
			got[idx-first] = b.mem.peek(k)
		case b.inflight[k] != nil:
			b.inflight[k].fe.refs++
			waits[idx-first] = b.inflight[k]
		default:
			for _, fe := range f.startRunsLocked([]int64{idx}, false) {
				fe.refs++
				waits[idx-first] = fe.blocks[0]
			}
		}
		b.mu.Unlock()
	}

	n := 0
	var err error
	for i := range got {
		idx := first + int64(i)
		lo := max(off, idx*bs) - idx*bs
		hi := min(end, (idx+1)*bs) - idx*bs
		var part []byte
		switch {
		case got[i] != nil:
			part = got[i][lo:hi]
		case err == nil:
			part, err = b.wait(ctx, waits[i], lo, hi)
		default:
			b.unwait(waits[i]) // gave up earlier: drop the interest
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

package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
)

// The fetch engine: the blocks in flight (Blocks.inflight), the fetches
// that bring them and the readers waiting for them. Readers (File.ReadAt,
// Stream) start fetches and wait here; a fetch hands each block, when
// full, to its waiters, to the memory tier and to the disk tier. The
// engine calls nothing above it; every function named ...Locked is called
// with Blocks.mu held.

// errCancelled ends the waits on a fetch nobody wants any more. Only
// waiters that gave up themselves can see it.
var errCancelled = errors.New("fetch cancelled")

// fetch is a run of blocks [first, first+len(blocks)) of one file being
// fetched by one goroutine.
type fetch struct {
	f        *File
	first    int64
	blocks   []*pending // nil once published or failed
	all      []*pending // every block, for the goroutine's own cleanup
	left     int        // blocks not published or failed yet
	from     int64      // byte of the first block the fetch begins at
	budget   int64      // bytes counted in Blocks.ahead while it runs (prefetch)
	refs     int        // waits and stream holds on the fetch
	done     bool       // finished, failed or cancelled
	cancel   context.CancelFunc
	prefetch bool
}

// pending is a block being fetched.
type pending struct {
	fe    *fetch
	k     bkey
	size  int64
	done  chan struct{} // closed when ready or err is set
	ready bool          // published: every byte of buf is in
	err   error
	// buf receives the block (its bytes allocated when the fetch gets to
	// it); the fetch is one of its users until it let go (released). While
	// it is filled (guarded by Blocks.mu), buf holds bytes [from, from+got)
	// so far, and partial are the readers waiting for a part of it. A
	// fetch that starts in the middle of a block (a random read) fills
	// [from, size) first and the head [0, from) last, so that the reader
	// that asked waits for its own bytes only.
	buf      *buffer
	released bool
	from     int64
	got      int64
	partial  []partialWait
}

// partialWait is a reader waiting for bytes [from, end) of a block.
type partialWait struct {
	end int64
	ch  chan struct{}
}

// wait waits for bytes [lo, hi) of a pending block and returns them (one
// interest in its fetch, dropped here). The bytes may come from the
// buffer being filled: bytes once written there never change. The caller
// joined pd (joinLocked), so it is a user of pd.buf: it releases it once
// it has copied the bytes, also after an error.
func (b *Blocks) wait(ctx context.Context, pd *pending, lo, hi int64) (part []byte, err error) {
	defer func() {
		b.mu.Lock()
		if err == nil {
			pd.fe.refs-- // served: the fetch goes on for the cache
		} else {
			b.unrefLocked(pd.fe)
		}
		b.mu.Unlock()
	}()
	b.mu.Lock()
	if !pd.ready && pd.err == nil && lo >= pd.from {
		if pd.buf.data != nil && hi <= pd.from+pd.got {
			part := pd.buf.data[lo:hi]
			b.mu.Unlock()
			return part, nil
		}
		// Coming in this pass: wait for just these bytes.
		pw := partialWait{end: hi, ch: make(chan struct{})}
		pd.partial = append(pd.partial, pw)
		b.mu.Unlock()
		select {
		case <-pw.ch:
			return pd.buf.data[lo:hi], nil
		case <-pd.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		b.mu.Unlock()
	}
	select {
	case <-pd.done:
		if pd.err != nil {
			return nil, pd.err
		}
		return pd.buf.data[lo:hi], nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// unwait drops one interest in pd's fetch; the last one cancels it: a
// fetch is cancelled only when all who wanted it gave up.
func (b *Blocks) unwait(pd *pending) {
	b.mu.Lock()
	b.unrefLocked(pd.fe)
	b.mu.Unlock()
}

func (b *Blocks) unrefLocked(fe *fetch) {
	fe.refs--
	if fe.refs > 0 || fe.done {
		return
	}
	fe.done = true
	if fe.left == 0 {
		return // every block is in; the goroutine is just finishing
	}
	b.stats.Cancelled++
	b.failLocked(fe, errCancelled)
	fe.cancel()
}

// failLocked ends the waits on the blocks of fe not published yet.
func (b *Blocks) failLocked(fe *fetch, err error) {
	for i := range fe.blocks {
		if pd := b.settleLocked(fe, i); pd != nil {
			pd.err = err
			close(pd.done)
		}
	}
}

// settleLocked takes block i off its fetch, off the blocks in flight and
// off the memory reserved, and returns it (nil if it was settled already).
func (b *Blocks) settleLocked(fe *fetch, i int) *pending {
	pd := fe.blocks[i]
	if pd == nil {
		return nil
	}
	fe.blocks[i] = nil
	fe.left--
	delete(b.inflight, pd.k)
	b.mem.release(pd.size)
	return pd
}

// startRunsLocked starts one fetch per run of consecutive indexes (sorted,
// none cached or in flight), the first beginning at byte from of its first
// block, and returns them, with no references taken.
func (f *File) startRunsLocked(idxs []int64, from int64, prefetch bool) []*fetch {
	var out []*fetch
	for len(idxs) > 0 {
		n := 1
		for n < len(idxs) && idxs[n] == idxs[0]+int64(n) {
			n++
		}
		out = append(out, f.startLocked(idxs[0], int64(n), from, prefetch))
		idxs = idxs[n:]
		from = 0
	}
	return out
}

// startLocked starts the fetch of blocks [first, first+n), beginning at
// byte from of the first block (its head comes last). Its blocks are
// reserved in the memory tier until they are published or fail.
func (f *File) startLocked(first, n, from int64, prefetch bool) *fetch {
	b := f.b
	ctx, cancel := context.WithCancel(b.ctx)
	fe := &fetch{f: f, first: first, from: from, cancel: cancel, prefetch: prefetch, blocks: make([]*pending, n), left: int(n)}
	var bytes int64
	for i := range n {
		k := bkey{f.key, first + i}
		pd := &pending{fe: fe, k: k, size: f.blockLen(first + i), done: make(chan struct{}), buf: newBuffer()}
		if i == 0 {
			pd.from = from
		}
		fe.blocks[i] = pd
		b.inflight[k] = pd
		bytes += pd.size
	}
	b.stats.Fetches++
	if prefetch {
		b.stats.Prefetches++
	}
	fe.all = slices.Clone(fe.blocks)
	b.mem.reserve(bytes)
	b.wg.Go(func() { b.run(ctx, fe) })
	return fe
}

// run is the goroutine of one fetch.
func (b *Blocks) run(ctx context.Context, fe *fetch) {
	defer fe.cancel()
	f := fe.f
	bs := b.o.BlockSize
	start := fe.first * bs
	end := min((fe.first+int64(len(fe.blocks)))*bs, f.size)
	from := fe.from
	w := &fetchWriter{b: b, fe: fe, fill: from}
	_, err := f.src.CopyRange(ctx, w, start+from, end-start-from)
	if err == nil && from > 0 && w.head != nil {
		// The head of the first block, skipped to serve its reader first.
		hw := &fetchWriter{b: b, fe: fe, buf: w.head, headOnly: true}
		if _, err = f.src.CopyRange(ctx, hw, start, from); err == nil && hw.fill == from {
			b.publish(fe, 0)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, pd := range fe.all { // the goroutine writes into them no more
		b.letGoLocked(pd)
	}
	b.ahead -= fe.budget
	fe.budget = 0
	if fe.done {
		return // cancelled: the waits are over already
	}
	fe.done = true
	if err == nil && fe.left == 0 {
		return
	}
	if err == nil { // the source said it was done, but blocks are missing
		err = fmt.Errorf("fetch of %d bytes at %d: %w", end-start, start, io.ErrUnexpectedEOF)
	}
	if fe.prefetch && fe.refs > 0 {
		b.log.Debug("prefetch failed", "off", start, "len", end-start, "err", err)
	}
	b.failLocked(fe, err)
}

// publish hands block i of fe, now whole in its buffer, to its waiters
// and to the tiers.
func (b *Blocks) publish(fe *fetch, i int) {
	b.mu.Lock()
	pd := b.settleLocked(fe, i)
	if pd == nil { // cancelled meanwhile
		b.mu.Unlock()
		return
	}
	buf := pd.buf
	pd.ready = true
	close(pd.done)
	b.stats.FetchedBlocks++
	b.stats.FetchedBytes += int64(len(buf.data))
	b.mem.put(pd.k, buf)
	if fe.f.disk {
		b.useLocked(buf) // until the disk write is done or dropped
	}
	b.letGoLocked(pd)
	b.mu.Unlock()
	if fe.f.disk {
		b.disk.store(fe.f.diskKey(pd.k.idx), fe.f.key, buf.data, fe.f.size, func() { b.release(buf) })
	}
}

// letGoLocked ends the fetch's own use of pd's buffer: it writes no more
// into it.
func (b *Blocks) letGoLocked(pd *pending) {
	if !pd.released {
		pd.released = true
		b.releaseLocked(pd.buf)
	}
}

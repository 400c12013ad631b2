package cache

// Block buffers are recycled: a sequential read of an image replaces the
// whole memory tier every --read-memory bytes, and fresh 256 KiB
// allocations cost the runtime a clear of each (and page faults once the
// scavenger returned their pages), about a seventh of the CPU of reading
// from Swift (test/bench/READ.md). A buffer goes back to a bounded free
// list once nobody can read it any more:
//
//   - it is out of the memory tier (evicted, or never put there);
//   - its fetch is done writing into it (published, failed or cancelled:
//     the fetch's goroutine lets go itself, so a cancelled fetch that is
//     still writing keeps it);
//   - no reader holds it: every reader that takes a buffer's bytes outside
//     Blocks.mu (a memory hit, a join of its fetch, a load from disk, a
//     warm) counts as a user until it has copied them;
//   - no disk write of it is queued.
//
// A recycled buffer's data is set to nil, so that a use nobody counted
// panics rather than reading another block's bytes.

// buffer is the bytes of one block in memory. Blocks.mu guards its
// fields; its bytes never change once the block is published.
type buffer struct {
	data   []byte
	users  int  // the fetch filling it, readers, queued disk writes
	cached bool // in the memory tier
}

// freeList holds buffers of whole blocks for reuse, up to max of them.
type freeList struct {
	bufs [][]byte
	max  int
}

// newBuffer returns a buffer without bytes yet (see allocLocked), with one
// user: the caller.
func newBuffer() *buffer { return &buffer{users: 1} }

// allocLocked gives buf n bytes, reused if a whole block's buffer is free.
// The bytes are not cleared: the fetch overwrites all of them.
func (b *Blocks) allocLocked(buf *buffer, n int64) {
	if l := len(b.free.bufs); l > 0 && n == b.o.BlockSize {
		buf.data = b.free.bufs[l-1]
		b.free.bufs[l-1] = nil
		b.free.bufs = b.free.bufs[:l-1]
		b.stats.BuffersReused++
		return
	}
	buf.data = make([]byte, n)
}

// useLocked counts one more user of buf.
func (b *Blocks) useLocked(buf *buffer) { buf.users++ }

// releaseLocked drops one user of buf and recycles it if that was the
// last one and the memory tier does not hold it.
func (b *Blocks) releaseLocked(buf *buffer) {
	buf.users--
	b.recycleLocked(buf)
}

// release is releaseLocked for a caller without Blocks.mu.
func (b *Blocks) release(bufs ...*buffer) {
	if len(bufs) == 0 {
		return
	}
	b.mu.Lock()
	for _, buf := range bufs {
		b.releaseLocked(buf)
	}
	b.mu.Unlock()
}

// evictedLocked is called when the memory tier drops buf.
func (b *Blocks) evictedLocked(buf *buffer) {
	buf.cached = false
	b.recycleLocked(buf)
}

func (b *Blocks) recycleLocked(buf *buffer) {
	if buf.users > 0 || buf.cached || buf.data == nil {
		return
	}
	if int64(cap(buf.data)) >= b.o.BlockSize && len(b.free.bufs) < b.free.max {
		b.free.bufs = append(b.free.bufs, buf.data[:b.o.BlockSize])
	}
	buf.data = nil
}

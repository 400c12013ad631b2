package cache

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Source is one object version as the block cache reads it. fs adapts
// segments.Reader to it.
type Source interface {
	// CopyRange writes bytes [off, off+n) of the object to w, in order,
	// each byte once (it resumes by itself after transient errors). Fewer
	// than n bytes come with an error. If w is an io.ReaderFrom, the
	// source may read into it directly.
	CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error)
	// Boundary returns the end of the piece (segment) that holds off:
	// reading across it costs a second request.
	Boundary(off int64) int64
}

// Options configure a Blocks cache.
type Options struct {
	// BlockSize is the unit of caching and of fetching, in bytes
	// (default DefaultBlockSize). A random read costs at least one block.
	BlockSize int64
	// Memory bounds the bytes of blocks held in memory: cached blocks,
	// blocks being fetched and blocks prefetched but not read yet.
	Memory int64
	// PrefetchMemory bounds, within Memory, the blocks being prefetched
	// (default Memory/2). A prefetch that does not fit is dropped, never
	// waited for.
	PrefetchMemory int64
	// Dir is the persistent cache directory ("" for memory only); DirSize
	// bounds the bytes of block files in it.
	Dir     string
	DirSize int64
	Log     *slog.Logger
}

// DefaultBlockSize is Options.BlockSize when unset: small enough that a
// random 64 KiB read costs about one small GET (Swift's per-request cost
// dominates below a few hundred KiB), large enough to keep the number of
// cache files reasonable.
const DefaultBlockSize = 256 << 10

// errCancelled ends the waits on a fetch nobody wants any more. Only
// waiters that gave up themselves can see it.
var errCancelled = errors.New("fetch cancelled")

// Blocks is a cache of fixed-size blocks of object versions, in memory
// (LRU bounded by bytes) and optionally on disk (see disk.go), with
// single-flight fetches: a block is fetched once however many readers want
// it, and readers of one version share every block.
//
// A fetch covers a run of consecutive blocks with one CopyRange, so one
// ranged GET serves a whole prefetch chunk; each block is handed to its
// waiters as soon as its bytes are in. Fetches run on the cache's own
// goroutines, not on the requests that want them: a reader that gives up
// only drops its interest, and a fetch nobody is interested in any more is
// cancelled. Close stops and waits for all of them.
//
// Blocks is safe for concurrent use.
type Blocks struct {
	o      Options
	log    *slog.Logger
	ctx    context.Context // lifetime of the fetches
	cancel context.CancelFunc
	wg     sync.WaitGroup // fetch goroutines
	once   sync.Once      // Close
	disk   *disk          // nil without a directory
	anon   atomic.Int64   // names uncacheable versions

	mu       sync.Mutex // guards the fields below and fetch/pending state
	mem      map[bkey]*memBlock
	lru      *list.List // of *memBlock, most recent first
	memBytes int64      // bytes in mem
	inflight map[bkey]*pending
	flying   int64 // bytes of blocks being fetched
	ahead    int64 // bytes of prefetches in flight
	closed   bool

	stats Stats
}

// Stats are counters of a Blocks cache.
type Stats struct {
	MemHits, DiskHits   int64 // blocks served from memory, from disk
	Fetches             int64 // fetches started (one CopyRange each)
	FetchedBlocks       int64 // blocks fetched from the source
	FetchedBytes        int64
	Prefetches          int64 // prefetch fetches started
	PrefetchDropped     int64 // prefetch chunks not started for lack of memory
	Cancelled           int64 // fetches cancelled because nobody wanted them
	DiskWrites          int64 // blocks written to disk
	DiskWriteDropped    int64 // blocks not written (queue full, disk full, error)
	DiskCorrupt         int64 // block files rejected on load
	MemBytes, DiskBytes int64 // current sizes
}

// LogValue logs the counters as a group.
func (s Stats) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("mem_hits", s.MemHits), slog.Int64("disk_hits", s.DiskHits),
		slog.Int64("fetches", s.Fetches), slog.Int64("fetched_bytes", s.FetchedBytes),
		slog.Int64("prefetches", s.Prefetches), slog.Int64("prefetch_dropped", s.PrefetchDropped),
		slog.Int64("cancelled", s.Cancelled), slog.Int64("disk_writes", s.DiskWrites),
		slog.Int64("disk_write_dropped", s.DiskWriteDropped), slog.Int64("disk_corrupt", s.DiskCorrupt),
		slog.Int64("mem_bytes", s.MemBytes), slog.Int64("disk_bytes", s.DiskBytes))
}

type bkey struct {
	obj string // version key of the object
	idx int64
}

type memBlock struct {
	k    bkey
	data []byte
	elem *list.Element
}

// fetch is a run of blocks [first, first+len(blocks)) of one file being
// fetched by one goroutine.
type fetch struct {
	f        *File
	first    int64
	blocks   []*pending // nil once published or failed
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
	fe   *fetch
	k    bkey
	size int64
	done chan struct{} // closed when data or err is set
	data []byte
	err  error
	// While it is filled (guarded by Blocks.mu): the buffer, which holds
	// bytes [from, from+got) so far, and the readers waiting for a part
	// of it. A fetch that starts in the middle of a block (a random read)
	// fills [from, size) first and the head [0, from) last, so that the
	// reader that asked waits for its own bytes only.
	buf     []byte
	from    int64
	got     int64
	partial []partialWait
}

// partialWait is a reader waiting for bytes [from, end) of a block.
type partialWait struct {
	end int64
	ch  chan struct{}
}

// New returns a cache. With o.Dir set it opens (creates, locks, scans) the
// persistent directory; the error says what is wrong with it.
func New(o Options) (*Blocks, error) {
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Memory < 0 {
		o.Memory = 0
	}
	if o.PrefetchMemory <= 0 {
		o.PrefetchMemory = o.Memory / 2
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Blocks{o: o, log: o.Log, ctx: ctx, cancel: cancel,
		mem: map[bkey]*memBlock{}, lru: list.New(), inflight: map[bkey]*pending{}}
	if o.Dir != "" {
		d, err := openDisk(o.Dir, o.DirSize, o.BlockSize, o.Log)
		if err != nil {
			cancel()
			return nil, err
		}
		b.disk = d
	}
	return b, nil
}

// BlockSize is the cache's block size in bytes.
func (b *Blocks) BlockSize() int64 { return b.o.BlockSize }

// Stats returns a snapshot of the counters.
func (b *Blocks) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.MemBytes = b.memBytes
	if b.disk != nil {
		b.disk.addStats(&s)
	}
	return s
}

// Close cancels every fetch, waits for the fetch goroutines and the disk
// writers, and releases the directory. Reads after Close fail.
func (b *Blocks) Close() error {
	var err error
	b.once.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		b.cancel()
		b.wg.Wait()
		if b.disk != nil {
			err = b.disk.close()
		}
	})
	return err
}

// File is one version of an object, read through the cache. Files of the
// same key share blocks. A File is cheap; make one per open.
type File struct {
	b    *Blocks
	key  string
	hash [16]byte // names the version's block files
	size int64
	src  Source
	disk bool // blocks may be kept on disk
}

// Open returns the File of version key (an opaque string that changes
// whenever the content may have: fs derives it from the object's name and
// the ETags of its segments) of size bytes, fetched from src. An empty key
// means the content cannot be identified: it is read through memory only
// and shared with nobody.
func (b *Blocks) Open(key string, size int64, src Source) *File {
	f := &File{b: b, key: key, size: size, src: src, disk: b.disk != nil && key != ""}
	if key == "" {
		f.key = fmt.Sprintf("\x00anonymous-%d", b.anon.Add(1))
	}
	sum := sha256.Sum256([]byte(f.key))
	copy(f.hash[:], sum[:16])
	return f
}

// Size is the file's size.
func (f *File) Size() int64 { return f.size }

func (f *File) blockLen(idx int64) int64 {
	return min(f.b.o.BlockSize, f.size-idx*f.b.o.BlockSize)
}

func (f *File) blocks() int64 { return (f.size + f.b.o.BlockSize - 1) / f.b.o.BlockSize }

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
		if mb := b.mem[k]; mb != nil {
			b.lru.MoveToFront(mb.elem)
			got[idx-first] = mb.data
			b.stats.MemHits++
			continue
		}
		if pd := b.inflight[k]; pd != nil {
			pd.fe.refs++
			waits[idx-first] = pd
			continue
		}
		if f.disk && b.disk.has(f.hash, idx) {
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
		if data := b.disk.load(f, idx); data != nil {
			got[idx-first] = data
			b.mu.Lock()
			b.stats.DiskHits++
			b.insertLocked(bkey{f.key, idx}, data)
			b.mu.Unlock()
			continue
		}
		b.mu.Lock()
		k := bkey{f.key, idx}
		switch {
		case b.mem[k] != nil:
			got[idx-first] = b.mem[k].data
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

// wait waits for bytes [lo, hi) of a pending block and returns them (one
// interest in its fetch, dropped here). The bytes may come from the
// buffer being filled: bytes once written there never change.
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
	if pd.data == nil && pd.err == nil && lo >= pd.from {
		if pd.buf != nil && hi <= pd.from+pd.got {
			part := pd.buf[lo:hi]
			b.mu.Unlock()
			return part, nil
		}
		// Coming in this pass: wait for just these bytes.
		pw := partialWait{end: hi, ch: make(chan struct{})}
		pd.partial = append(pd.partial, pw)
		b.mu.Unlock()
		select {
		case <-pw.ch:
			return pd.buf[lo:hi], nil
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
		return pd.data[lo:hi], nil
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

// settleLocked takes block i off its fetch and off the blocks in flight,
// and returns it (nil if it was settled already).
func (b *Blocks) settleLocked(fe *fetch, i int) *pending {
	pd := fe.blocks[i]
	if pd == nil {
		return nil
	}
	fe.blocks[i] = nil
	fe.left--
	delete(b.inflight, pd.k)
	b.flying -= pd.size
	return pd
}

// startRunsLocked starts one fetch per run of consecutive indexes (sorted,
// none cached or in flight) and returns them, with no references taken.
func (f *File) startRunsLocked(idxs []int64, prefetch bool) []*fetch {
	return f.startRunsFromLocked(idxs, 0, prefetch)
}

// startRunsFromLocked is startRunsLocked, the first run starting at byte
// from of its first block.
func (f *File) startRunsFromLocked(idxs []int64, from int64, prefetch bool) []*fetch {
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
// byte from of the first block (its head comes last).
func (f *File) startLocked(first, n, from int64, prefetch bool) *fetch {
	b := f.b
	ctx, cancel := context.WithCancel(b.ctx)
	fe := &fetch{f: f, first: first, from: from, cancel: cancel, prefetch: prefetch, blocks: make([]*pending, n), left: int(n)}
	for i := range n {
		k := bkey{f.key, first + i}
		pd := &pending{fe: fe, k: k, size: f.blockLen(first + i), done: make(chan struct{})}
		if i == 0 {
			pd.from = from
		}
		fe.blocks[i] = pd
		b.inflight[k] = pd
		b.flying += pd.size
	}
	b.stats.Fetches++
	if prefetch {
		b.stats.Prefetches++
	}
	b.evictLocked()
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
			b.publish(fe, 0, w.head)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
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

// fetchWriter receives a fetch's bytes, in order, into fresh block
// buffers, lets partial waiters have theirs as they come, and publishes
// each block when it is full.
type fetchWriter struct {
	b    *Blocks
	fe   *fetch
	i    int // block being filled
	buf  []byte
	fill int64 // bytes of buf filled (from the block's start)
	// head is the first block's buffer when the fetch began inside it:
	// published after its head is fetched. headOnly marks the writer of
	// that head, which fills buf[:from] and publishes nothing.
	head     []byte
	headOnly bool
}

func (w *fetchWriter) next() bool {
	if w.headOnly {
		return w.fill < w.fe.from
	}
	if w.buf != nil {
		return true
	}
	if w.i >= len(w.fe.blocks) {
		return false
	}
	w.buf = make([]byte, w.fe.f.blockLen(w.fe.first+int64(w.i)))
	if w.i > 0 {
		w.fill = 0
	}
	w.b.mu.Lock()
	if pd := w.fe.blocks[w.i]; pd != nil {
		pd.buf = w.buf
	}
	w.b.mu.Unlock()
	return true
}

// room is the part of buf the next bytes go to.
func (w *fetchWriter) room() []byte {
	if w.headOnly {
		return w.buf[w.fill:w.fe.from]
	}
	return w.buf[w.fill:]
}

// advance records n more bytes: partial waiters that have theirs are
// woken, a full block is published.
func (w *fetchWriter) advance(n int) {
	w.fill += int64(n)
	if w.headOnly || n == 0 {
		return
	}
	b := w.b
	b.mu.Lock()
	if pd := w.fe.blocks[w.i]; pd != nil {
		pd.got = w.fill - pd.from
		keep := pd.partial[:0]
		for _, pw := range pd.partial {
			if pw.end <= w.fill {
				close(pw.ch)
			} else {
				keep = append(keep, pw)
			}
		}
		pd.partial = keep
	}
	b.mu.Unlock()
	if w.fill == int64(len(w.buf)) {
		if w.i == 0 && w.fe.from > 0 {
			w.head = w.buf // published once its head is in
		} else {
			b.publish(w.fe, w.i, w.buf)
		}
		w.i++
		w.buf = nil
	}
}

// Write implements io.Writer.
func (w *fetchWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if !w.next() {
			return n, io.ErrShortWrite
		}
		c := copy(w.room(), p[n:])
		n += c
		w.advance(c)
	}
	return n, nil
}

// ReadFrom reads straight into the block buffers.
func (w *fetchWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for w.next() {
		n, err := r.Read(w.room())
		total += int64(n)
		w.advance(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// publish hands block i of fe to its waiters and to the cache.
func (b *Blocks) publish(fe *fetch, i int, data []byte) {
	b.mu.Lock()
	pd := b.settleLocked(fe, i)
	if pd == nil { // cancelled meanwhile
		b.mu.Unlock()
		return
	}
	pd.data = data
	close(pd.done)
	b.stats.FetchedBlocks++
	b.stats.FetchedBytes += int64(len(data))
	b.insertLocked(pd.k, data)
	b.mu.Unlock()
	if fe.f.disk {
		b.disk.store(fe.f, pd.k.idx, data)
	}
}

// insertLocked puts a block in the memory LRU and evicts what no longer fits.
func (b *Blocks) insertLocked(k bkey, data []byte) {
	if mb := b.mem[k]; mb != nil {
		b.lru.MoveToFront(mb.elem)
		return
	}
	mb := &memBlock{k: k, data: data}
	mb.elem = b.lru.PushFront(mb)
	b.mem[k] = mb
	b.memBytes += int64(len(data))
	b.evictLocked()
}

// evictLocked drops the least recently used blocks until the cached and
// in-flight bytes fit in the memory budget.
func (b *Blocks) evictLocked() {
	for b.memBytes+b.flying > b.o.Memory {
		e := b.lru.Back()
		if e == nil {
			return
		}
		mb := e.Value.(*memBlock)
		b.lru.Remove(e)
		delete(b.mem, mb.k)
		b.memBytes -= int64(len(mb.data))
	}
}

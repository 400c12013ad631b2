package cache

import (
	"context"
	"sync"
)

// StreamOptions tune the read-ahead of a Stream.
type StreamOptions struct {
	// Initial is the first read-ahead window once reads look sequential
	// (default 1 MiB): small, so that a reader that only looked sequential
	// for two reads costs little.
	Initial int64
	// Max caps the window (default 64 MiB). The window doubles every time
	// the reader has consumed half of it.
	Max int64
	// Chunk is the size of one prefetch GET (default 8 MiB). Chunks are
	// fetched in parallel and never cross a segment boundary, except for
	// the block that straddles it.
	Chunk int64
	// Tolerance is how far a read may land from the end of the previous
	// ones and still count as sequential (default: the larger of 8 MiB and
	// the window). The kernel's readahead and parallel direct I/O send
	// reads slightly out of order.
	Tolerance int64
}

func (o *StreamOptions) defaults() {
	if o.Initial <= 0 {
		o.Initial = 1 << 20
	}
	if o.Max <= 0 {
		o.Max = 64 << 20
	}
	if o.Max < o.Initial {
		o.Max = o.Initial
	}
	if o.Chunk <= 0 {
		o.Chunk = 8 << 20
	}
	if o.Tolerance <= 0 {
		o.Tolerance = 8 << 20
	}
}

// Stream is one reader's view of a File (one open file handle): it reads
// through the cache and, while the reads are sequential, prefetches ahead
// of them with a window that starts small and grows geometrically up to a
// cap. A read far from the previous ones (a seek) drops the prefetches
// nobody else waits for and starts over.
//
// Prefetches in flight count against the cache's prefetch budget; a chunk
// that does not fit is dropped, so readers never wait for memory. What
// they fetched then sits in the cache's memory, least recently used first
// to go: a stream that stops reading (a VM gone idle after booting) pins
// no budget. Safe for concurrent use; Close drops the stream's interest
// in its prefetches, and those nobody else waits for are cancelled.
type Stream struct {
	f *File
	o StreamOptions

	mu     sync.Mutex // guards the fields below; taken before Blocks.mu
	reads  int64      // reads seen since the last seek
	end    int64      // highest end offset read since the last seek
	window int64      // current read-ahead window, 0 until sequential
	ahead  int64      // prefetch asked for up to this offset
	held   []hold     // prefetches the stream holds, by ascending end
	closed bool
}

const (
	// confirmReads is how many reads in a row must be near each other
	// before the stream prefetches: two random reads land close by chance
	// now and then, three rarely.
	confirmReads = 3
	// startTolerance is the sequential margin until then.
	startTolerance = 4 << 20
)

// hold is the stream's interest in a fetch ahead of the reader: while it
// lasts, the fetch is not cancelled for want of readers.
type hold struct {
	fe  *fetch
	end int64 // offset the reader must pass to release it
}

// NewStream returns a Stream over f.
func (f *File) NewStream(o StreamOptions) *Stream {
	o.defaults()
	return &Stream{f: f, o: o}
}

// ReadAt reads like File.ReadAt and prefetches after it.
func (s *Stream) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	s.observe(off, int64(len(p)))
	return s.f.ReadAt(ctx, p, off)
}

// observe updates the access pattern with a read of n bytes at off and
// starts the prefetches it calls for, before the read itself waits.
func (s *Stream) observe(off, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	end := min(off+n, s.f.size)
	// Near the previous reads: behind them (reordered, or rereading what
	// was just fetched), or ahead by a little, or inside what was
	// prefetched. The margin is tighter until the stream is established,
	// so that random reads rarely pass for a stream.
	tol := s.o.Tolerance
	if s.window == 0 {
		tol = min(tol, startTolerance)
	}
	tol = max(tol, s.window)
	near := s.reads > 0 && off >= s.end-tol && off <= max(s.end, s.ahead)+tol
	if !near { // first read, or a seek
		s.releaseLocked(true)
		s.reads, s.end, s.window, s.ahead = 1, end, 0, 0
		return
	}
	s.reads++
	s.end = max(s.end, end)
	if s.reads < confirmReads {
		return
	}
	s.releaseLocked(false)
	if s.end >= s.f.size {
		return
	}
	if s.window == 0 {
		s.window = s.o.Initial
	}
	bs := s.f.b.o.BlockSize
	start := max(s.ahead, (s.end+bs-1)/bs*bs)
	if start-s.end > s.window/2 {
		return // more than half the window is still ahead
	}
	target := min(s.end+s.window, s.f.size)
	if s.prefetchLocked(start, target) {
		s.window = min(2*s.window, s.o.Max)
	}
}

// prefetchLocked asks for [start, target) in chunks; it reports whether all
// of it fit in the budget.
func (s *Stream) prefetchLocked(start, target int64) bool {
	f := s.f
	b := f.b
	bs := b.o.BlockSize
	for start < target {
		// One chunk: up to Chunk bytes, cut at the segment boundary
		// rounded up to a whole block (the block that straddles it costs
		// a second, small GET).
		cend := min(start+s.o.Chunk, target)
		if bnd := f.src.Boundary(start); bnd < cend {
			cend = bnd
		}
		cend = min((cend+bs-1)/bs*bs, (f.size+bs-1)/bs*bs)
		if !s.holdLocked(start/bs, cend/bs, cend) {
			return false
		}
		start = cend
		s.ahead = cend
	}
	return true
}

// holdLocked takes an interest in blocks [first, last) ahead of the reader:
// fetches what is neither cached nor in flight, within the budget.
func (s *Stream) holdLocked(first, last, end int64) bool {
	f := s.f
	b := f.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	var miss []int64
	var bytes int64
	var others []*fetch
	for idx := first; idx < last; idx++ {
		k := bkey{f.key, idx}
		if b.mem.has(k) {
			continue
		}
		if pd := b.inflight[k]; pd != nil {
			if len(others) == 0 || others[len(others)-1] != pd.fe {
				others = append(others, pd.fe)
			}
			continue
		}
		if f.disk && b.disk.has(f.diskKey(idx)) {
			continue
		}
		miss = append(miss, idx)
		bytes += f.blockLen(idx)
	}
	if bytes > 0 && (b.ahead+bytes > b.o.PrefetchMemory || !b.mem.fits(bytes)) {
		b.stats.PrefetchDropped++
		return false
	}
	for _, fe := range others {
		fe.refs++
		s.held = append(s.held, hold{fe: fe, end: end})
	}
	for _, fe := range f.startRunsLocked(miss, 0, true) {
		fe.refs++
		s.held = append(s.held, hold{fe: fe, end: end})
		for _, pd := range fe.blocks {
			fe.budget += pd.size
		}
		b.ahead += fe.budget // until the fetch ends
	}
	return true
}

// releaseLocked drops the holds the reader has passed (all with all set).
// A passed fetch still in flight is kept until it is well behind: reads
// the kernel reordered may still want it, and dropping the last interest
// would cancel it.
func (s *Stream) releaseLocked(all bool) {
	if len(s.held) == 0 {
		return
	}
	b := s.f.b
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := s.held[:0]
	for _, h := range s.held {
		if !all && (h.end > s.end || (!h.fe.done && h.end > s.end-max(s.o.Tolerance, s.window))) {
			keep = append(keep, h)
			continue
		}
		b.unrefLocked(h.fe)
	}
	clear(s.held[len(keep):])
	s.held = keep
}

// Close releases the stream's prefetches; fetches nobody else waits for
// are cancelled.
func (s *Stream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(true)
	s.closed = true
}

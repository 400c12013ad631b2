package segments

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// ChunkSize is the unit in which write memory is taken and given back.
// A segment buffer is a list of chunks, so a small file holds one chunk,
// not a whole segment.
const ChunkSize = 1 << 20

// Pool is the upload machinery shared by all writers of a mount: a memory
// budget for segment buffers and a bounded number of upload workers. It is
// safe for concurrent use.
//
// Memory never grows past the budget and writers never fail for lack of
// it: they wait. Waiting is safe while some memory belongs to sealed
// segments, which their uploads give back. When all of it sits in the
// partly filled segments of open files (more files being written than the
// budget has segments for, or files left open idle), nothing would come
// back by itself, so the waiting writer seals a partly filled segment early,
// as a short segment (SLO segments may have any size): another writer's
// that is idle, or else its own.
type Pool struct {
	segmentSize int64
	workers     chan struct{}       // one token per running upload
	mem         *semaphore.Weighted // budget, in chunks
	budget      int64               // chunks
	sealed      atomic.Int64        // chunks of sealed segments, to be given back by their uploads
	inUse       atomic.Int64        // chunks taken, for Stats

	mu      sync.Mutex // guards spare, writers
	spare   [][]byte   // chunks given back, reused: the heap does not churn
	writers map[*Writer]struct{}
}

// memPoll is how often a writer waiting for memory checks whether it has
// to seal a segment early to make progress.
const memPoll = 50 * time.Millisecond

// NewPool returns a Pool for segments of segmentSize bytes (rounded up to
// a whole number of chunks) and the given number of parallel uploads.
// Memory is bounded by (workers+1) segments: one being filled per writer
// at full speed, the others uploading. Writers block when it is used up.
func NewPool(segmentSize int64, workers int) *Pool {
	segmentSize = (segmentSize + ChunkSize - 1) / ChunkSize * ChunkSize
	if segmentSize < ChunkSize {
		segmentSize = ChunkSize
	}
	workers = max(workers, 1)
	budget := int64(workers+1) * (segmentSize / ChunkSize)
	return &Pool{
		segmentSize: segmentSize,
		workers:     make(chan struct{}, workers),
		mem:         semaphore.NewWeighted(budget),
		budget:      budget,
		writers:     map[*Writer]struct{}{},
	}
}

// SegmentSize is the size of a full segment, bytes.
func (p *Pool) SegmentSize() int64 { return p.segmentSize }

// Workers is the number of parallel uploads.
func (p *Pool) Workers() int { return cap(p.workers) }

// MemoryBudget is the most memory segment buffers may use, bytes.
func (p *Pool) MemoryBudget() int64 { return p.budget * ChunkSize }

// tryAlloc takes one chunk if the budget allows, else nil. A reused
// chunk is not cleared: its user clears what it does not overwrite.
func (p *Pool) tryAlloc() []byte {
	if !p.mem.TryAcquire(1) {
		return nil
	}
	p.inUse.Add(1)
	return p.take()
}

// allocWait waits up to d for a chunk: (nil, nil) when d passed first.
func (p *Pool) allocWait(ctx context.Context, d time.Duration) ([]byte, error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := p.mem.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, nil
	}
	p.inUse.Add(1)
	return p.take(), nil
}

func (p *Pool) take() []byte {
	p.mu.Lock()
	var b []byte
	if n := len(p.spare); n > 0 {
		b = p.spare[n-1]
		p.spare = p.spare[:n-1]
	}
	p.mu.Unlock()
	if b == nil {
		return make([]byte, ChunkSize)
	}
	return b
}

// free gives a chunk back.
func (p *Pool) free(b []byte) {
	p.mu.Lock()
	p.spare = append(p.spare, b)
	p.mu.Unlock()
	p.inUse.Add(-1)
	p.mem.Release(1)
}

// startUpload waits for an upload slot.
func (p *Pool) startUpload(ctx context.Context) error {
	select {
	case p.workers <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Pool) endUpload() { <-p.workers }

func (p *Pool) register(w *Writer) {
	p.mu.Lock()
	p.writers[w] = struct{}{}
	p.mu.Unlock()
}

func (p *Pool) unregister(w *Writer) {
	p.mu.Lock()
	delete(p.writers, w)
	p.mu.Unlock()
}

// others returns the writers registered besides w that hold memory in
// open segments, the one holding the most first: the candidates for
// relief (Writer.relieveOther). The Pool itself never calls a Writer.
func (p *Pool) others(w *Writer) []*Writer {
	p.mu.Lock()
	var cands []*Writer
	for o := range p.writers {
		if o != w && o.openChunks.Load() > 0 {
			cands = append(cands, o)
		}
	}
	p.mu.Unlock()
	sort.Slice(cands, func(i, j int) bool { return cands[i].openChunks.Load() > cands[j].openChunks.Load() })
	return cands
}

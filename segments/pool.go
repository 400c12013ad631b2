package segments

import (
	"context"
	"sync"

	"golang.org/x/sync/semaphore"
)

// ChunkSize is the unit in which write memory is taken and given back.
// A segment buffer is a list of chunks, so a small file holds one chunk,
// not a whole segment.
const ChunkSize = 1 << 20

// Pool is the upload machinery shared by all writers of a mount: a memory
// budget for segment buffers and a bounded number of upload workers. It is
// safe for concurrent use.
type Pool struct {
	segmentSize int64
	workers     chan struct{}       // one token per running upload
	mem         *semaphore.Weighted // budget, in chunks
	chunks      sync.Pool
}

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
	p := &Pool{
		segmentSize: segmentSize,
		workers:     make(chan struct{}, workers),
		mem:         semaphore.NewWeighted(int64(workers+1) * (segmentSize / ChunkSize)),
	}
	p.chunks.New = func() any { b := make([]byte, ChunkSize); return &b }
	return p
}

// SegmentSize is the size of a full segment, bytes.
func (p *Pool) SegmentSize() int64 { return p.segmentSize }

// Workers is the number of parallel uploads.
func (p *Pool) Workers() int { return cap(p.workers) }

// MemoryBudget is the most memory segment buffers may use, bytes.
func (p *Pool) MemoryBudget() int64 { return int64(cap(p.workers)+1) * p.segmentSize }

// alloc takes one zeroed chunk from the budget, waiting while it is used up.
func (p *Pool) alloc(ctx context.Context) ([]byte, error) {
	if err := p.mem.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	b := *(p.chunks.Get().(*[]byte))
	clear(b)
	return b, nil
}

// free gives a chunk back.
func (p *Pool) free(b []byte) {
	p.chunks.Put(&b)
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

package segments

import (
	"sync/atomic"
	"time"
)

// What the write path is doing, for status and metrics: a Writer's
// progress and the Pool's budgets. Plain atomics, read without a lock:
// a WriteAt that waits for memory holds the Writer's lock.

// Progress is a snapshot of an upload.
type Progress struct {
	Object   string
	UploadID string
	Started  time.Time
	State    string // "writing", "staged" (on local disk until the commit), "committing"
	// Written is the size of the new version so far (bytes written, with
	// holes); Uploaded the bytes of segments Swift has stored.
	Written, Uploaded int64
	// Segments: InFlight are being PUT now, Queued wait for an upload
	// worker, Done are stored.
	InFlight, Queued, Done int64
}

// progress are a Writer's counters.
type progress struct {
	started  time.Time
	uploaded atomic.Int64 // bytes of segments stored
	inFlight atomic.Int64 // segment PUTs running
	queued   atomic.Int64 // segments sealed, waiting for a worker
	done     atomic.Int64 // segments stored
	staged   atomic.Bool
	commit   atomic.Bool // Commit is running
}

// Progress returns a snapshot of the upload. It never blocks.
func (w *Writer) Progress() Progress {
	p := &w.prog
	state := "writing"
	switch {
	case p.commit.Load():
		state = "committing"
	case p.staged.Load():
		state = "staged"
	}
	return Progress{Object: w.object, UploadID: w.uploadID, Started: p.started, State: state,
		Written: w.size.Load(), Uploaded: p.uploaded.Load(),
		InFlight: p.inFlight.Load(), Queued: p.queued.Load(), Done: p.done.Load()}
}

// PoolStats is a snapshot of a Pool: its memory and its upload workers.
type PoolStats struct {
	MemoryInUse, MemoryBudget int64 // bytes of segment buffers
	Uploads, Workers          int   // segment PUTs running, and the most at once
}

// Stats returns a snapshot of the pool.
func (p *Pool) Stats() PoolStats {
	return PoolStats{MemoryInUse: p.inUse.Load() * ChunkSize, MemoryBudget: p.MemoryBudget(),
		Uploads: len(p.workers), Workers: cap(p.workers)}
}

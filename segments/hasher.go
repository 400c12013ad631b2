package segments

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
	"sync/atomic"
)

// hasher computes the SHA-256 of a new version in file order, in its own
// goroutine, so that neither the writes nor the uploads wait for it. Jobs
// come in file order as segments are sealed: bytes of a segment buffer
// (which the job keeps alive until hashed), a run of zeros (holes), or a
// range of unknown content (data reused from the previous version), which
// makes the sum unknown.
type hasher struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []hashJob
	closed  bool
	discard atomic.Bool // Abort: stop hashing, just release the buffers
	done    chan struct{}

	h       hash.Hash // owned by the goroutine until done
	unknown bool
	giveUp  atomic.Bool // the sum will be unknown: stop hashing now
}

type hashJob struct {
	sb      *segBuf // bytes [lo, hi) of sb, or
	lo, hi  int64
	zeros   int64 // this many zeros, or
	unknown bool  // bytes the writer does not have
	release func()
}

func newHasher() *hasher {
	hs := &hasher{h: sha256.New(), done: make(chan struct{})}
	hs.cond = sync.NewCond(&hs.mu)
	go hs.run()
	return hs
}

// add queues a job; it never blocks.
func (hs *hasher) add(j hashJob) {
	hs.mu.Lock()
	hs.queue = append(hs.queue, j)
	hs.mu.Unlock()
	hs.cond.Signal()
}

func (hs *hasher) run() {
	defer close(hs.done)
	for {
		hs.mu.Lock()
		for len(hs.queue) == 0 && !hs.closed {
			hs.cond.Wait()
		}
		if len(hs.queue) == 0 {
			hs.mu.Unlock()
			return
		}
		j := hs.queue[0]
		hs.queue[0] = hashJob{}
		hs.queue = hs.queue[1:]
		hs.mu.Unlock()
		hs.do(j)
	}
}

func (hs *hasher) do(j hashJob) {
	if j.release != nil {
		defer j.release()
	}
	if hs.giveUp.Load() {
		hs.unknown = true
	}
	if hs.discard.Load() || hs.unknown {
		return
	}
	switch {
	case j.unknown:
		hs.unknown = true
	case j.sb != nil:
		j.sb.hashRange(j.lo, j.hi, hs.h)
	default:
		for n := j.zeros; n > 0 && !hs.discard.Load() && !hs.giveUp.Load(); {
			l := min(n, ChunkSize)
			hs.h.Write(zeroChunk[:l])
			n -= l
		}
	}
}

// abandon makes the sum unknown and stops the hashing as soon as possible.
func (hs *hasher) abandon() { hs.giveUp.Store(true) }

// sum waits for every job and returns the hex SHA-256, or "" when some
// content was unknown.
func (hs *hasher) sum() string {
	hs.close()
	if hs.unknown || hs.discard.Load() || hs.giveUp.Load() {
		return ""
	}
	return hex.EncodeToString(hs.h.Sum(nil))
}

// stop abandons the hash: queued buffers are released unhashed.
func (hs *hasher) stop() {
	hs.discard.Store(true)
	hs.close()
}

func (hs *hasher) close() {
	hs.mu.Lock()
	hs.closed = true
	hs.mu.Unlock()
	hs.cond.Broadcast()
	<-hs.done
}

func newSHA256() hash.Hash { return sha256.New() }

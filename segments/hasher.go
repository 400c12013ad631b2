package segments

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"sync"
	"sync/atomic"
)

// Sums chooses the whole-file digests a Writer computes while writing,
// each stored in hex in the new version's metadata. The zero value is the
// default: SHA-256 only. Each digest costs CPU on every byte written
// (measured on the lab machines, Go 1.26: SHA-256 ~0.6 with SHA-NI, MD5
// ~1.4, SHA-512 ~1.25 CPU seconds per GiB), so MD5 and SHA-512, which
// Glance records as an image's checksum and os_hash_value, are opt-in.
type Sums struct {
	NoSHA256 bool // no sha256 metadata
	MD5      bool // md5 metadata
	SHA512   bool // sha512 metadata
}

// Metadata keys of the whole-file digests (X-Object-Meta-<key>).
const (
	MetaSHA256 = "sha256" // hex SHA-256 of the whole content
	MetaMD5    = "md5"    // hex MD5 of the whole content (Glance's checksum)
	MetaSHA512 = "sha512" // hex SHA-512 of the whole content (Glance's os_hash_value)
)

// fileSum is one whole-file digest: its metadata key and its hash.
type fileSum struct {
	meta string
	new  func() hash.Hash
}

// list returns the digests s asks for, in a fixed order.
func (s Sums) list() []fileSum {
	var out []fileSum
	if !s.NoSHA256 {
		out = append(out, fileSum{MetaSHA256, sha256.New})
	}
	if s.MD5 {
		out = append(out, fileSum{MetaMD5, md5.New})
	}
	if s.SHA512 {
		out = append(out, fileSum{MetaSHA512, sha512.New})
	}
	return out
}

// sumsOf adds to meta the digests of bytes [0, size) of sb (a small
// file's only buffer, hashed at commit).
func (s Sums) sumsOf(sb *segBuf, size int64, meta map[string]string) {
	for _, fs := range s.list() {
		h := fs.new()
		sb.hashRange(0, size, h)
		meta[fs.meta] = hex.EncodeToString(h.Sum(nil))
	}
}

// hasher computes the whole-file digests of a new version in file order,
// one goroutine (a lane) per digest, so that neither the writes, nor the
// uploads, nor the other digests wait for it. Jobs come in file order as
// segments are sealed: bytes of a segment buffer (which the job keeps
// alive until every lane hashed it), a run of zeros (holes), or a range of
// unknown content (data reused from the previous version), which makes
// the sums unknown. With no digest one lane only releases the buffers.
type hasher struct {
	lanes   []*lane
	discard atomic.Bool // Abort: stop hashing, just release the buffers
	giveUp  atomic.Bool // the sums will be unknown: stop hashing now
}

// lane hashes the jobs for one digest.
type lane struct {
	hs     *hasher
	meta   string
	mu     sync.Mutex // guards queue, closed
	cond   *sync.Cond
	queue  []hashJob
	closed bool
	done   chan struct{}

	h       hash.Hash // owned by the goroutine until done; nil: no digest
	unknown bool
}

type hashJob struct {
	sb      *segBuf // bytes [lo, hi) of sb, or
	lo, hi  int64
	zeros   int64 // this many zeros, or
	unknown bool  // bytes the writer does not have
	release func()
}

func newHasher(s Sums) *hasher {
	hs := &hasher{}
	sums := s.list()
	if len(sums) == 0 {
		sums = []fileSum{{}}
		hs.giveUp.Store(true)
	}
	for _, fs := range sums {
		l := &lane{hs: hs, meta: fs.meta, done: make(chan struct{})}
		if fs.new != nil {
			l.h = fs.new()
		}
		l.cond = sync.NewCond(&l.mu)
		hs.lanes = append(hs.lanes, l)
		go l.run()
	}
	return hs
}

// add queues a job on every lane; it never blocks. The job's release
// runs once the last lane is done with it.
func (hs *hasher) add(j hashJob) {
	if n := int32(len(hs.lanes)); n > 1 && j.release != nil {
		var left atomic.Int32
		left.Store(n)
		release := j.release
		j.release = func() {
			if left.Add(-1) == 0 {
				release()
			}
		}
	}
	for _, l := range hs.lanes {
		l.mu.Lock()
		l.queue = append(l.queue, j)
		l.mu.Unlock()
		l.cond.Signal()
	}
}

func (l *lane) run() {
	defer close(l.done)
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.closed {
			l.cond.Wait()
		}
		if len(l.queue) == 0 {
			l.mu.Unlock()
			return
		}
		j := l.queue[0]
		l.queue[0] = hashJob{}
		l.queue = l.queue[1:]
		l.mu.Unlock()
		l.do(j)
	}
}

func (l *lane) do(j hashJob) {
	if j.release != nil {
		defer j.release()
	}
	hs := l.hs
	if hs.giveUp.Load() {
		l.unknown = true
	}
	if hs.discard.Load() || l.unknown {
		return
	}
	switch {
	case j.unknown:
		l.unknown = true
	case j.sb != nil:
		j.sb.hashRange(j.lo, j.hi, l.h)
	default:
		for n := j.zeros; n > 0 && !hs.discard.Load() && !hs.giveUp.Load(); {
			k := min(n, ChunkSize)
			l.h.Write(zeroChunk[:k])
			n -= k
		}
	}
}

// abandon makes the sums unknown and stops the hashing as soon as
// possible.
func (hs *hasher) abandon() { hs.giveUp.Store(true) }

// sums waits for every job and returns the hex digests by metadata key,
// or nil when some content was unknown.
func (hs *hasher) sums() map[string]string {
	hs.close()
	if hs.discard.Load() || hs.giveUp.Load() {
		return nil
	}
	out := map[string]string{}
	for _, l := range hs.lanes {
		if l.unknown {
			return nil
		}
		out[l.meta] = hex.EncodeToString(l.h.Sum(nil))
	}
	return out
}

// stop abandons the hash: queued buffers are released unhashed.
func (hs *hasher) stop() {
	hs.discard.Store(true)
	hs.close()
}

func (hs *hasher) close() {
	for _, l := range hs.lanes {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.cond.Broadcast()
	}
	for _, l := range hs.lanes {
		<-l.done
	}
}

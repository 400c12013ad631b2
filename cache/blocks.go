package cache

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
)

// Source is one object version as the block cache reads it;
// segments.Reader is one.
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
	// Peers, if set, fills misses from the fleet's other hosts first
	// (peer.go): every Source of a File with a version key is read
	// through it.
	Peers *Peers
}

// DefaultBlockSize is Options.BlockSize when unset: small enough that a
// random 64 KiB read costs about one small GET (Swift's per-request cost
// dominates below a few hundred KiB), large enough to keep the number of
// cache files reasonable.
const DefaultBlockSize = 256 << 10

// Blocks is a cache of fixed-size blocks of object versions, in memory
// and optionally on disk, with single-flight fetches (see the package
// doc). Blocks is safe for concurrent use.
type Blocks struct {
	o      Options
	log    *slog.Logger
	ctx    context.Context // lifetime of the fetches
	cancel context.CancelFunc
	wg     sync.WaitGroup // fetch goroutines
	once   sync.Once      // Close
	disk   *disk          // the disk tier; nil without a directory
	anon   atomic.Int64   // names uncacheable versions

	mu       sync.Mutex        // guards the fields below and the fetches' state
	mem      memory            // the memory tier
	free     freeList          // block buffers to reuse (buffer.go)
	inflight map[bkey]*pending // the fetch engine: blocks being fetched
	ahead    int64             // bytes of prefetches in flight
	closed   bool
	stats    Stats
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
	DiskWriteDropped    int64 // blocks not written (queue full past storeWait, disk full, error)
	DiskWriteWaits      int64 // fetches that waited for room in the disk write queue
	DiskWholeImages     int64 // image versions whole on disk, in one file each (current)
	DiskCorrupt         int64 // block files rejected on load
	BuffersReused       int64 // block buffers taken from the free list
	MemBytes, DiskBytes int64 // current sizes
}

// LogValue logs the counters as a group.
func (s Stats) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("mem_hits", s.MemHits), slog.Int64("disk_hits", s.DiskHits),
		slog.Int64("fetches", s.Fetches), slog.Int64("fetched_bytes", s.FetchedBytes),
		slog.Int64("prefetches", s.Prefetches), slog.Int64("prefetch_dropped", s.PrefetchDropped),
		slog.Int64("cancelled", s.Cancelled), slog.Int64("disk_writes", s.DiskWrites),
		slog.Int64("disk_write_dropped", s.DiskWriteDropped), slog.Int64("disk_write_waits", s.DiskWriteWaits), slog.Int64("disk_whole_images", s.DiskWholeImages), slog.Int64("disk_corrupt", s.DiskCorrupt), slog.Int64("buffers_reused", s.BuffersReused),
		slog.Int64("mem_bytes", s.MemBytes), slog.Int64("disk_bytes", s.DiskBytes))
}

// bkey names a block in memory and in flight.
type bkey struct {
	obj string // version key of the object
	idx int64
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
		mem: memory{limit: o.Memory}, inflight: map[bkey]*pending{}}
	b.mem.evicted = b.evictedLocked
	// Enough free buffers for the blocks a stream's prefetches evict at
	// once (they would be garbage otherwise: the heap holds them either way).
	b.free.max = int(o.Memory / 4 / o.BlockSize)
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
	s.MemBytes = b.mem.cached()
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
// whenever the content may have: segments.Manifest.Version, from the
// object's name and the ETags of its segments) of size bytes, fetched from src. An empty key
// means the content cannot be identified: it is read through memory only
// and shared with nobody.
func (b *Blocks) Open(key string, size int64, src Source) *File {
	if b.o.Peers != nil && key != "" {
		src = b.o.Peers.wrap(src)
	}
	f := &File{b: b, key: key, size: size, src: src, disk: b.disk != nil && key != ""}
	if key == "" {
		f.key = fmt.Sprintf("\x00anonymous-%d", b.anon.Add(1))
	}
	sum := sha256.Sum256([]byte(f.key))
	copy(f.hash[:], sum[:16])
	return f
}

// Whole opens the version's whole-image file, if every block of it is on
// disk, assembled into one file that is still the one sealed (see
// whole.go): the image's bytes as they are, for the kernel to read
// (FUSE passthrough). The caller closes it. A removed whole file (evicted)
// stays readable through an open one.
func (f *File) Whole() (*os.File, bool) {
	if !f.disk {
		return nil, false
	}
	return f.b.disk.openWhole(f.hash, f.key, f.size)
}

// Size is the file's size.
func (f *File) Size() int64 { return f.size }

func (f *File) blockLen(idx int64) int64 {
	return min(f.b.o.BlockSize, f.size-idx*f.b.o.BlockSize)
}

// diskKey names block idx in the disk tier.
func (f *File) diskKey(idx int64) diskKey { return diskKey{f.hash, idx} }

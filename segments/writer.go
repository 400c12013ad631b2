package segments

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"path"
	"sync"
	"sync/atomic"
	"time"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	Container string // container of the object
	// SegmentContainer holds the segments; default Container+"_segments".
	SegmentContainer string
	Pool             *Pool // shared memory budget and upload workers
	// MaxSegments is the most entries one manifest may have
	// (slo.max_manifest_segments); more segments nest manifests.
	MaxSegments int
	ContentType string            // default: from the name's extension
	Meta        map[string]string // extra X-Object-Meta-*
	Log         *slog.Logger

	// Under is the version the new one starts from, for a file opened for
	// writing without truncating it: bytes that are not written read as
	// Under's, and the new manifest references Under's segments for them
	// rather than uploading them again. nil starts from an empty file.
	// Under must not reference the object itself (a plain object is
	// replaced by the commit): load such content with WriteAt instead.
	Under *Manifest
	// Staging, if set, takes over a file whose writes go back into data
	// already uploaded: the file is then kept on local disk and uploaded by
	// Commit. Without it such writes fail with ErrNonSequential.
	Staging *Staging
	// Retry governs the reads the Writer makes itself (ReadAt, staging).
	Retry RetryPolicy
	// MaxHashedHoles bounds the bytes of holes the whole-file digests
	// cover (default DefaultMaxHashedHoles): they have no shortcut for
	// zeros, so a huge sparse file would keep close(2) waiting for the
	// hash. A file with more holes gets no digest metadata.
	MaxHashedHoles int64
	// Sums chooses the whole-file digests (default: SHA-256 only).
	Sums Sums
	// Versions, if set, owns what the commit replaces: the current version
	// is retired through it before the new one is published, and the
	// upload holds its own segments and Under's while it runs. Without it
	// the replaced version's objects are left alone (unit tests).
	Versions *Versions
}

// Metadata keys the Writer sets (X-Object-Meta-<key>).
const (
	MetaMtime = "mtime" // seconds since the epoch, as the swift CLI and rclone write it
	// MetaUpload is the upload id of the version: a commit whose answer
	// was lost can tell that it landed.
	MetaUpload = "imagefs-upload"
)

// DefaultMaxHashedHoles is 64 GiB of holes: about 45 s of hashing at the
// ~1.4 GB/s of SHA-256 here, mostly while the data is still being copied.
const DefaultMaxHashedHoles = 64 << 30

// mergeGap: unwritten bytes (that read as zeros) between two written ranges
// of a segment are uploaded as zeros when the gap is smaller than this,
// and referenced from the zero segment when larger.
const mergeGap = ChunkSize

// zeroSegment is the name, below an upload's prefix, of the segment of
// zeros that holes reference.
const zeroSegment = "zero"

// Writer streams one new version of an object into Swift. Writes at the
// end of the data (and forward jumps, which leave holes) fill segment
// buffers; sealed segments upload in parallel, bounded by the Pool, and a
// separate goroutine hashes them in order. Commit publishes the version
// atomically: a single PUT for a small file, else an SLO manifest, nested
// when the segments outnumber one manifest. Until Commit succeeds readers
// see the previous version.
//
// Segments are named <object>/<upload id>/<%08d> in the segment container,
// so two uploads of one path never share a segment. Holes are ranges of
// one segment of zeros per upload (<object>/<upload id>/zero); with Under,
// bytes not written are ranges of Under's segments. Abort deletes this
// upload's segments.
//
// The two segments after the last sealed one stay open, so writes that the
// kernel delivers slightly out of order still land. A write before them
// switches the file to staging on local disk if the options allow it, and
// otherwise fails with ErrNonSequential. A write that fails spoils the
// upload: Commit then returns that error and publishes nothing.
//
// All methods are safe for concurrent use.
type Writer struct {
	st       ObjectStore
	o        WriterOptions
	object   string
	uploadID string
	segSize  int64
	ctx      context.Context // lifetime of the uploads
	cancel   context.CancelFunc

	size       atomic.Int64 // logical size so far
	openChunks atomic.Int64 // chunks held by open (unsealed) segment buffers

	mu      sync.Mutex // guards everything below
	idle    *sync.Cond // signalled when pending drops to 0
	base    int64      // object offset of open[0]; bytes before are sealed
	open    [2]*segBuf // open[0] covers [base, base+S), open[1] the next S
	parts   []*part    // sealed parts in order, covering [0, base)
	nseg    int        // segment objects named so far
	own     []string   // every object this upload PUT or is PUTting
	pending int        // uploads not finished
	err     error      // first error, sticky
	state   writerState
	result  error // Commit's result once committed
	sha     *hasher
	under   underlay // what unwritten bytes hold: Under's, then zeros
	holes   int64    // bytes of holes sealed (zeros to hash)
	sink    sink     // window{}, or the staged file once the file is staged on disk
	holds   []*Hold  // this upload's segments and Under's, while it runs
	heldOwn bool     // holds has the upload's own prefix

	created atomic.Bool // segment container checked
	prog    progress    // for Progress (progress.go)
}

type writerState int

const (
	writing writerState = iota
	committed
	aborted
)

type partKind int

const (
	partData partKind = iota // a segment this upload PUTs
	partZero                 // a range of the upload's zero segment
	partRef                  // a range of an existing object (Under)
)

// part is one piece of the new version, in order.
type part struct {
	off, size int64 // where it lies in the new version
	kind      partKind
	container string
	object    string
	etag      string // partData: set once uploaded
	objSize   int64  // size of the whole object (0: unknown)
	objOff    int64  // partRef: where the range starts in the object
}

// ErrAborted: the upload was abandoned.
var ErrAborted = errors.New("upload aborted")

// errRetry tells WriteAt that the window moved under it.
var errRetry = errors.New("retry")

// NewWriter starts a new version of object. ctx is the lifetime of the
// uploads (the mount's), not of one request; Abort or Commit ends them.
func NewWriter(ctx context.Context, st ObjectStore, object string, o WriterOptions) *Writer {
	if o.SegmentContainer == "" {
		o.SegmentContainer = o.Container + "_segments"
	}
	if o.MaxSegments <= 0 {
		o.MaxSegments = DefaultLimits.MaxManifestSegments
	}
	// Nesting needs at least two entries per manifest to make progress.
	o.MaxSegments = max(o.MaxSegments, 2)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Retry == (RetryPolicy{}) {
		o.Retry = DefaultRetryPolicy
	}
	if o.MaxHashedHoles == 0 {
		o.MaxHashedHoles = DefaultMaxHashedHoles
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &Writer{st: st, o: o, object: object, uploadID: NewUploadID(time.Now()),
		segSize: o.Pool.SegmentSize(), ctx: wctx, cancel: cancel}
	w.prog.started = time.Now()
	w.sha = w.newHasher()
	w.sink = window{}
	w.idle = sync.NewCond(&w.mu)
	w.under = newUnderlay(o.Under)
	w.size.Store(w.under.size)
	if v := o.Versions; v != nil && o.Under != nil {
		w.holds = append(w.holds, v.HoldBase(o.Under))
	}
	o.Pool.register(w)
	return w
}

// releaseHolds ends the upload's holds (they linger a moment, covering
// the listing's lag behind the new manifest). Called with w.mu held.
func (w *Writer) releaseHolds() {
	for _, h := range w.holds {
		h.Release()
	}
	w.holds = nil
}

func (w *Writer) failpoint(name string) {
	if w.o.Versions != nil {
		w.o.Versions.failpoint(name)
	}
}

// NewUploadID returns a fresh upload id: UTC time (so gc can judge age)
// and 48 random bits.
func NewUploadID(now time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Size is the logical size written so far.
func (w *Writer) Size() int64 { return w.size.Load() }

// UploadID identifies this upload's segments.
func (w *Writer) UploadID() string { return w.uploadID }

// SegmentPrefix is where this upload's segments live in the segment container.
func (w *Writer) SegmentPrefix() string { return w.object + "/" + w.uploadID + "/" }

// Staged reports whether the file is staged on local disk.
func (w *Writer) Staged() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.staging() != nil
}

// WriteAt copies p into the new version at off. It may block while the
// memory budget is used up (ctx ends the wait). It returns the first
// error of the upload, ErrNonSequential for a write into sealed data when
// there is no staging, ErrNoSpace when staging is full, and ErrCommitted
// after Commit. Like io.WriterAt it does not retain p.
func (w *Writer) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.sink.behind(w, off) {
		if err := w.toStaging(ctx, "write", off, int64(len(p))); err != nil {
			return 0, err
		}
	}
	n, err := w.sink.take(ctx, w, p, off)
	if err != nil && !errors.Is(err, context.Canceled) {
		w.fail(err)
	}
	return n, err
}

// fail makes err the upload's sticky error. Called with w.mu held.
func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// writeLocked is WriteAt into the segment window. Called with w.mu held.
func (w *Writer) writeLocked(ctx context.Context, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		// Slide the window until pos falls into it.
		for pos >= w.base+2*w.segSize {
			w.sealFirst(w.segSize)
		}
		slot := int((pos - w.base) / w.segSize)
		if slot == 1 && w.open[0] != nil && w.open[0].full(w.segSize) {
			// The usual sequential case: the first segment is complete
			// and writing has moved on, so upload it now.
			w.sealFirst(w.segSize)
			slot = 0
		}
		sb := w.open[slot]
		if sb == nil {
			sb = &segBuf{off: w.base + int64(slot)*w.segSize}
			w.open[slot] = sb
		}
		rel := pos - sb.off
		take := min(int64(len(p)-n), w.segSize-rel)
		k, err := sb.write(rel, p[n:n+int(take)], func() ([]byte, error) { return w.allocChunk(ctx, pos) })
		n += k
		if end := pos + int64(k); end > w.size.Load() {
			w.size.Store(end)
		}
		if errors.Is(err, errRetry) {
			continue
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// allocChunk takes a chunk of memory for an open segment, waiting while the
// budget is used up. When nothing will give memory back by itself it seals
// an idle writer's partial segment, or its own (then errRetry: the window
// moved). Called with w.mu held; pos is where the write continues.
func (w *Writer) allocChunk(ctx context.Context, pos int64) ([]byte, error) {
	p := w.o.Pool
	for {
		b := p.tryAlloc()
		if b == nil && p.sealed.Load() == 0 && !w.relieveOther() && w.sealShort(pos) {
			return nil, errRetry
		}
		if b == nil {
			var err error
			if b, err = p.allocWait(ctx, memPoll); err != nil {
				return nil, err
			}
			if b == nil && w.ctx.Err() != nil {
				// Abort cancelled the upload: it waits for w.mu.
				return nil, ErrAborted
			}
		}
		if b != nil {
			w.openChunks.Add(1)
			return b, nil
		}
	}
}

// relieveOther seals a partly filled segment of another writer of the
// pool that is not busy right now, the one holding the most memory first.
// It reports whether it found one. Called with w.mu held (only other
// writers' locks are tried).
func (w *Writer) relieveOther() bool {
	for _, o := range w.o.Pool.others(w) {
		if o.relieveIdle() {
			return true
		}
	}
	return false
}

// relieveIdle seals the writer's partial segment early if the writer is
// not busy (another writer needs the memory). It reports whether it did.
func (w *Writer) relieveIdle() bool {
	if !w.mu.TryLock() {
		return false
	}
	defer w.mu.Unlock()
	return w.state == writing && w.staging() == nil && w.sealShort(-1)
}

// sealShort seals open[0] as a short segment when it holds one run of
// bytes from its start and nothing lies after it (a sequential writer in
// the middle of a segment), and pos (if not -1) is not inside that run.
// Called with w.mu held.
func (w *Writer) sealShort(pos int64) bool {
	sb := w.open[0]
	if sb == nil || len(sb.spans) != 1 || sb.spans[0].lo != 0 || (w.open[1] != nil && !w.open[1].empty()) {
		return false
	}
	k := sb.spans[0].hi
	if pos >= 0 && pos < sb.off+k {
		return false
	}
	w.sealFirst(k)
	return true
}

// Truncate sets the size. Growing leaves zeros; shrinking is allowed only
// within data not yet uploaded (or, with staging, anywhere).
func (w *Writer) Truncate(ctx context.Context, size int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if w.sink.behind(w, size) {
		if err := w.toStaging(ctx, "truncate", size, 0); err != nil {
			return err
		}
	}
	w.under.cut(size)
	if err := w.sink.resize(w, size); err != nil {
		w.fail(err)
		return err
	}
	w.size.Store(size)
	return nil
}

func (w *Writer) usable() error {
	switch {
	case w.state == committed:
		return ErrCommitted
	case w.state == aborted:
		return ErrAborted
	case w.err != nil:
		return w.err
	}
	return nil
}

// sealFirst seals the first n bytes of the window (n is the segment size,
// or less when nothing lies beyond: a short seal) and slides the window by
// n. Written runs become data parts that upload in the background; the
// bytes between them become references to Under or the zero segment.
// Called with w.mu held.
func (w *Writer) sealFirst(n int64) {
	sb := w.open[0]
	if n < w.segSize && w.open[1] != nil {
		// Only empty buffers can lie beyond a short seal.
		w.openChunks.Add(-w.open[1].free(w.o.Pool))
		w.open[1] = nil
	}
	w.open[0], w.open[1] = w.open[1], nil
	start := w.base
	w.base += n
	var runs []span
	if sb != nil {
		runs = sb.runs(n, w.under.size-sb.off, mergeGap)
	}
	if len(runs) == 0 {
		if sb != nil {
			w.openChunks.Add(-sb.free(w.o.Pool))
		}
		w.fill(start, start+n)
		return
	}
	chunks := sb.chunkCount()
	w.openChunks.Add(-chunks)
	p := w.o.Pool
	p.sealed.Add(chunks)
	sb.refs.Store(int32(2 * len(runs))) // an upload and a hash per run
	release := func() {
		if sb.refs.Add(-1) == 0 {
			sb.free(p)
			p.sealed.Add(-chunks)
		}
	}
	pos := int64(0)
	for _, r := range runs {
		w.fill(start+pos, start+r.lo)
		pt := &part{off: start + r.lo, size: r.hi - r.lo, kind: partData, container: w.o.SegmentContainer,
			object: w.segmentName(), objSize: r.hi - r.lo}
		w.parts = append(w.parts, pt)
		w.sha.add(hashJob{sb: sb, lo: r.lo, hi: r.hi, release: release})
		w.pending++
		w.prog.queued.Add(1)
		go w.upload(pt, sb, r.lo, release)
		pos = r.hi
	}
	w.fill(start+pos, start+n)
}

// holdOwn holds the upload's own objects, from the first one it names
// on (a small file has none, and needs no lease). Called with w.mu held.
func (w *Writer) holdOwn() {
	if !w.heldOwn && w.o.Versions != nil {
		w.heldOwn = true
		w.holds = append(w.holds, w.o.Versions.HoldPrefix(w.o.SegmentContainer, w.SegmentPrefix()))
	}
}

func (w *Writer) segmentName() string {
	w.holdOwn()
	name := w.SegmentPrefix() + fmt.Sprintf("%08d", w.nseg)
	w.nseg++
	w.own = append(w.own, name)
	return name
}

// fill appends the parts for the unwritten bytes [a, b): the underlay's
// (references to the previous version) while it lasts, then zeros. Called
// with w.mu held.
func (w *Writer) fill(a, b int64) {
	for a < b {
		if s, ok := w.under.piece(a, b-a); ok {
			w.parts = append(w.parts, &part{off: a, size: s.Length, kind: partRef, container: s.Container,
				object: s.Object, etag: s.ETag, objSize: s.Size, objOff: s.Offset})
			if isZeros(s) {
				w.hashZeros(s.Length)
			} else {
				w.sha.add(hashJob{unknown: true})
			}
			a += s.Length
			continue
		}
		take := min(b-a, w.segSize)
		if l := len(w.parts); l > 0 {
			if last := w.parts[l-1]; last.kind == partZero && last.off+last.size == a && last.size < w.segSize {
				take = min(take, w.segSize-last.size)
				last.size += take
				w.hashZeros(take)
				a += take
				continue
			}
		}
		w.parts = append(w.parts, &part{off: a, size: take, kind: partZero})
		w.hashZeros(take)
		a += take
	}
}

// newHasher starts the hasher of a new version; with no digest chosen it
// hashes nothing (it only releases the buffers it is given).
func (w *Writer) newHasher() *hasher { return newHasher(w.o.Sums) }

// hashZeros queues n zeros for the hash, unless the file has more holes
// than are worth hashing. Called with w.mu held.
func (w *Writer) hashZeros(n int64) {
	w.holes += n
	if w.holes > w.o.MaxHashedHoles {
		w.sha.abandon()
		return
	}
	w.sha.add(hashJob{zeros: n})
}

// upload PUTs one data part. Owned by the Writer: Commit, Sync and Abort
// wait for it.
func (w *Writer) upload(pt *part, sb *segBuf, lo int64, release func()) {
	err := w.o.Pool.startUpload(w.ctx)
	w.prog.queued.Add(-1)
	var etag string
	if err == nil {
		w.prog.inFlight.Add(1)
		err = w.ensureSegmentContainer()
		if err == nil {
			// The MD5 is computed here, by as many goroutines as there are
			// upload workers, rather than on the write path.
			etag, err = w.st.Put(w.ctx, pt.container, pt.object, sb.section(lo, lo+pt.size), pt.size, sb.md5hex(lo, lo+pt.size),
				PutOptions{Meta: sb.digests(lo, lo+pt.size, nil)})
		}
		w.prog.inFlight.Add(-1)
		w.o.Pool.endUpload()
	}
	if err == nil {
		w.prog.uploaded.Add(pt.size)
		w.prog.done.Add(1)
	}
	// Give the memory back before taking w.mu: a WriteAt may hold w.mu
	// while it waits for memory.
	release()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && w.err == nil && w.state != aborted {
		w.err = fmt.Errorf("upload segment %s of %s: %w", pt.object, w.object, err)
		w.o.Log.Error("segment upload failed", "object", w.object, "segment", pt.object, "err", err)
	}
	pt.etag = etag
	w.pending--
	if w.pending == 0 {
		w.idle.Broadcast()
	}
}

// ensureSegmentContainer creates the segment container once per Writer.
// It must not take w.mu (see upload).
func (w *Writer) ensureSegmentContainer() error {
	if w.created.Load() {
		return nil
	}
	if err := w.st.CreateContainer(w.ctx, w.o.SegmentContainer); err != nil {
		return fmt.Errorf("create segment container %s: %w", w.o.SegmentContainer, err)
	}
	w.created.Store(true)
	return nil
}

// waitIdle waits for all uploads. Called with w.mu held.
func (w *Writer) waitIdle() {
	for w.pending > 0 {
		w.idle.Wait()
	}
}

// Sync uploads everything written so far and waits for it (fsync). Later
// writes continue after it; a write before it goes to staging or fails
// with ErrNonSequential. A staged file is synced to local disk only: it
// reaches Swift at Commit.
func (w *Writer) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == committed {
		return w.result
	}
	if err := w.usable(); err != nil {
		return err
	}
	return w.sink.sync(w)
}

// sealAll seals every byte up to the logical size. Called with w.mu held.
func (w *Writer) sealAll() {
	size := w.size.Load()
	for w.base < size {
		w.sealFirst(min(w.segSize, size-w.base))
	}
}

func contentTypeFor(name string) string {
	switch path.Ext(name) {
	case ".qcow2", ".qcow":
		return "application/x-qemu-disk"
	case ".raw", ".img":
		return "application/octet-stream"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

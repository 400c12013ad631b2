package segments

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"mime"
	"path"
	"strconv"
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
}

// Metadata keys the Writer sets (X-Object-Meta-<key>).
const (
	MetaMtime  = "mtime"  // seconds since the epoch, as the swift CLI and rclone write it
	MetaSHA256 = "sha256" // hex SHA-256 of the whole content
)

// Writer streams one new version of an object into Swift. Writes at the
// end of the data (and forward jumps, which leave zeros) fill segment
// buffers; full segments upload in parallel, bounded by the Pool. Commit
// publishes the version atomically: a single PUT for a file of at most one
// segment, else an SLO manifest, nested when the segments outnumber one
// manifest. Until Commit succeeds readers see the previous version.
//
// Segments are named <object>/<upload id>/<%08d> in the segment container,
// so two uploads of one path never share a segment. Abort deletes them.
//
// The two segments after the last sealed one stay open, so writes that the
// kernel delivers slightly out of order still land; a write before them
// fails with ErrNonSequential. All methods are safe for concurrent use.
type Writer struct {
	st       ObjectStore
	o        WriterOptions
	object   string
	uploadID string
	segSize  int64
	ctx      context.Context // lifetime of the uploads
	cancel   context.CancelFunc

	size atomic.Int64 // logical size so far

	mu      sync.Mutex // guards everything below
	idle    *sync.Cond // signalled when pending drops to 0
	base    int64      // object offset of open[0]; bytes before are sealed
	open    [2]*segBuf // open[0] covers [base, base+S), open[1] the next S
	parts   []*part    // sealed segments in order
	pending int        // uploads not finished
	err     error      // first upload error, sticky
	sha     hash.Hash  // SHA-256 of the sealed bytes, in order
	state   writerState
	result  error // Commit's result once committed

	created atomic.Bool // segment container checked
}

type writerState int

const (
	writing writerState = iota
	committed
	aborted
)

// part is one sealed segment of the new version.
type part struct {
	off, size int64
	object    string // segment object; "" for a hole (zeros)
	etag      string // set once uploaded
}

// ErrAborted: the upload was abandoned.
var ErrAborted = errors.New("upload aborted")

// NewWriter starts a new version of object. ctx is the lifetime of the
// uploads (the mount's), not of one request; Abort or Commit ends them.
func NewWriter(ctx context.Context, st ObjectStore, object string, o WriterOptions) *Writer {
	if o.SegmentContainer == "" {
		o.SegmentContainer = o.Container + "_segments"
	}
	if o.MaxSegments <= 0 {
		o.MaxSegments = DefaultLimits.MaxManifestSegments
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &Writer{st: st, o: o, object: object, uploadID: NewUploadID(time.Now()),
		segSize: o.Pool.SegmentSize(), ctx: wctx, cancel: cancel, sha: sha256.New()}
	w.idle = sync.NewCond(&w.mu)
	return w
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

// WriteAt copies p into the segment buffers at off. It may block while the
// memory budget is used up (ctx ends the wait). It returns the first upload
// error, ErrNonSequential for a write into sealed data and ErrCommitted
// after Commit. Implementations of io.WriterAt must not retain p; neither
// does WriteAt.
func (w *Writer) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return 0, err
	}
	if off < w.base {
		w.o.Log.Error("write goes back into data already uploaded; imagefs files are written sequentially",
			"object", w.object, "off", off, "len", len(p), "uploaded_up_to", w.base)
		return 0, fmt.Errorf("%w: %s at offset %d (uploaded up to %d)", ErrNonSequential, w.object, off, w.base)
	}
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
		if err := sb.write(ctx, w.o.Pool, rel, p[n:n+int(take)]); err != nil {
			return n, err
		}
		n += int(take)
		if end := pos + take; end > w.size.Load() {
			w.size.Store(end)
		}
	}
	return n, nil
}

// Truncate sets the size. Growing leaves zeros; shrinking is allowed only
// within data not yet uploaded.
func (w *Writer) Truncate(size int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if size < w.base {
		return fmt.Errorf("%w: truncate %s to %d (uploaded up to %d)", ErrNonSequential, w.object, size, w.base)
	}
	for i, sb := range w.open {
		if sb == nil {
			continue
		}
		if sb.off >= size {
			sb.free(w.o.Pool)
			w.open[i] = nil
			continue
		}
		sb.clip(size-sb.off, w.o.Pool)
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

// sealFirst seals open[0] with length n and slides the window by n.
// Called with w.mu held.
func (w *Writer) sealFirst(n int64) {
	sb := w.open[0]
	// A short seal (Sync, Commit) happens only when nothing lies beyond
	// it, so open[1] is empty then and no buffer has to move.
	w.open[0], w.open[1] = w.open[1], nil
	p := &part{off: w.base, size: n}
	w.base += n
	w.parts = append(w.parts, p)
	if sb == nil || sb.empty() {
		// A hole: no memory, no upload; it references the zero segment.
		if sb != nil {
			sb.free(w.o.Pool)
		}
		zeroHash(w.sha, n)
		return
	}
	p.object = w.SegmentPrefix() + fmt.Sprintf("%08d", len(w.parts)-1)
	sb.hashInto(n, w.sha)
	w.pending++
	go w.upload(p, sb)
}

func zeroHash(h hash.Hash, n int64) {
	for n > 0 {
		l := min(n, ChunkSize)
		h.Write(zeroChunk[:l])
		n -= l
	}
}

// upload PUTs one sealed segment. Owned by the Writer: Commit, Sync and
// Abort wait for it.
func (w *Writer) upload(p *part, sb *segBuf) {
	err := w.o.Pool.startUpload(w.ctx)
	if err == nil {
		err = w.ensureSegmentContainer()
	}
	var etag string
	if err == nil {
		etag, err = w.st.Put(w.ctx, w.o.SegmentContainer, p.object, sb.reader(p.size), p.size, sb.md5hex(p.size), PutOptions{})
		w.o.Pool.endUpload()
	}
	// Give the memory back before taking w.mu: a WriteAt may hold w.mu
	// while it waits for memory.
	sb.free(w.o.Pool)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && w.err == nil && w.state != aborted {
		w.err = fmt.Errorf("upload segment %s of %s: %w", p.object, w.object, err)
		w.o.Log.Error("segment upload failed", "object", w.object, "segment", p.object, "err", err)
	}
	p.etag = etag
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
// writes continue after it; writes before it fail with ErrNonSequential.
func (w *Writer) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == committed {
		return w.result
	}
	if err := w.usable(); err != nil {
		return err
	}
	w.sealAll()
	w.waitIdle()
	return w.err
}

// sealAll seals every byte up to the logical size. Called with w.mu held.
func (w *Writer) sealAll() {
	size := w.size.Load()
	for w.base < size {
		w.sealFirst(min(w.segSize, size-w.base))
	}
}

// Commit finishes the upload and publishes the new version (FLUSH). It is
// idempotent: later calls return the first result. On failure nothing is
// published, the previous version stays, and the segments are deleted.
func (w *Writer) Commit(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case committed:
		return w.result
	case aborted:
		return ErrAborted
	}
	w.result = w.commit(ctx)
	w.state = committed
	if w.result != nil {
		w.cleanup(context.WithoutCancel(ctx))
	}
	w.cancel()
	return w.result
}

// commit does the work of Commit. Called with w.mu held.
func (w *Writer) commit(ctx context.Context) error {
	size := w.size.Load()
	meta := map[string]string{}
	for k, v := range w.o.Meta {
		meta[k] = v
	}
	meta[MetaMtime] = strconv.FormatFloat(float64(time.Now().UnixNano())/1e9, 'f', 6, 64)
	po := PutOptions{ContentType: w.o.ContentType, Meta: meta}
	if po.ContentType == "" {
		po.ContentType = contentTypeFor(w.object)
	}
	// What the commit replaces, read before it is replaced.
	garbage := w.oldSegments(ctx)
	if w.err == nil && len(w.parts) == 0 && size <= w.segSize {
		// Small file: one plain object, no segments.
		sb := w.open[0]
		if sb == nil {
			sb = &segBuf{}
		}
		sb.hashInto(size, w.sha)
		meta[MetaSHA256] = hex.EncodeToString(w.sha.Sum(nil))
		_, err := w.st.Put(ctx, w.o.Container, w.object, sb.reader(size), size, sb.md5hex(size), po)
		sb.free(w.o.Pool)
		w.open[0] = nil
		if err != nil {
			return fmt.Errorf("put %s: %w", w.object, err)
		}
		w.deleteOld(ctx, garbage)
		return nil
	}
	w.sealAll()
	w.waitIdle()
	if w.err != nil {
		return w.err
	}
	meta[MetaSHA256] = hex.EncodeToString(w.sha.Sum(nil))
	entries, err := w.entries(ctx)
	if err != nil {
		return err
	}
	for i := 0; len(entries) > w.o.MaxSegments; i++ {
		if entries, err = w.nest(ctx, entries, i); err != nil {
			return err
		}
	}
	if _, err := w.st.PutManifest(ctx, w.o.Container, w.object, entries, po); err != nil {
		return fmt.Errorf("put manifest %s: %w", w.object, err)
	}
	w.deleteOld(ctx, garbage)
	return nil
}

// entries builds the manifest entries of the sealed parts, uploading the
// zero segment that holes refer to if there are any.
func (w *Writer) entries(ctx context.Context) ([]ManifestEntry, error) {
	var zeroLen int64
	for _, p := range w.parts {
		if p.object == "" {
			zeroLen = max(zeroLen, p.size)
		}
	}
	zeroObj := w.SegmentPrefix() + "zero"
	if zeroLen > 0 {
		if err := w.ensureSegmentContainer(); err != nil {
			return nil, err
		}
		if _, err := w.st.Put(ctx, w.o.SegmentContainer, zeroObj, io.NewSectionReader(zeroReader{}, 0, zeroLen), zeroLen, zeroMD5(zeroLen), PutOptions{}); err != nil {
			return nil, fmt.Errorf("put hole segment of %s: %w", w.object, err)
		}
	}
	entries := make([]ManifestEntry, 0, len(w.parts))
	for _, p := range w.parts {
		if p.object == "" {
			entries = append(entries, ManifestEntry{Container: w.o.SegmentContainer, Object: zeroObj,
				Size: zeroLen, Offset: 0, Length: p.size})
			continue
		}
		entries = append(entries, ManifestEntry{Container: w.o.SegmentContainer, Object: p.object,
			ETag: p.etag, Size: p.size})
	}
	return entries, nil
}

// nest groups entries into sub-manifests of at most MaxSegments entries,
// stored beside the segments, and returns the entries that reference them.
func (w *Writer) nest(ctx context.Context, entries []ManifestEntry, level int) ([]ManifestEntry, error) {
	var out []ManifestEntry
	for i := 0; i < len(entries); i += w.o.MaxSegments {
		group := entries[i:min(i+w.o.MaxSegments, len(entries))]
		name := fmt.Sprintf("%smanifest-%d-%06d", w.SegmentPrefix(), level, len(out))
		var n int64
		for _, e := range group {
			n += e.Bytes()
		}
		if _, err := w.st.PutManifest(ctx, w.o.SegmentContainer, name, group, PutOptions{}); err != nil {
			return nil, fmt.Errorf("put sub-manifest %s: %w", name, err)
		}
		out = append(out, ManifestEntry{Container: w.o.SegmentContainer, Object: name, Size: n})
	}
	return out, nil
}

// oldSegments lists the segments of the current version of the object,
// which a successful commit makes garbage. Errors only cost garbage.
func (w *Writer) oldSegments(ctx context.Context) map[string][]string {
	old, err := w.st.Head(ctx, w.o.Container, w.object)
	if err != nil || (!old.SLO && old.DLO == "") {
		return nil
	}
	var garbage map[string][]string
	if old.SLO {
		garbage, err = sloObjects(ctx, w.st, old.Container, old.Name, 0)
	} else {
		var segs []Segment
		segs, err = listDLO(ctx, w.st, old.DLO)
		garbage = map[string][]string{}
		for _, s := range segs {
			garbage[s.Container] = append(garbage[s.Container], s.Object)
		}
	}
	if err != nil {
		w.o.Log.Warn("could not list the segments of the version being replaced; gc will find them", "object", w.object, "err", err)
		return nil
	}
	return garbage
}

// deleteOld deletes the replaced version's segments, never this upload's.
func (w *Writer) deleteOld(ctx context.Context, garbage map[string][]string) {
	for c, objs := range garbage {
		doomed := objs[:0]
		for _, o := range objs {
			if c != w.o.SegmentContainer || !hasPrefix(o, w.SegmentPrefix()) {
				doomed = append(doomed, o)
			}
		}
		garbage[c] = doomed
	}
	if err := deleteGroups(ctx, w.st, garbage); err != nil {
		w.o.Log.Warn("could not delete the replaced version's segments; gc will find them", "object", w.object, "err", err)
	}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// Abort abandons the upload: nothing is published and the segments
// uploaded so far are deleted (best effort). It waits for running uploads.
func (w *Writer) Abort(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != writing {
		return
	}
	w.state = aborted
	w.cancel()
	w.cleanup(ctx)
}

// cleanup frees buffers, waits for uploads and deletes this upload's
// segments. Called with w.mu held.
func (w *Writer) cleanup(ctx context.Context) {
	for i, sb := range w.open {
		if sb != nil {
			sb.free(w.o.Pool)
			w.open[i] = nil
		}
	}
	w.waitIdle()
	var objs []string
	err := w.st.List(ctx, w.o.SegmentContainer, w.SegmentPrefix(), 0, func(in Info) error {
		objs = append(objs, in.Name)
		return nil
	})
	if err == nil && len(objs) > 0 {
		err = w.st.DeleteMany(ctx, w.o.SegmentContainer, objs)
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		w.o.Log.Warn("could not delete an abandoned upload's segments; gc will find them",
			"object", w.object, "upload", w.uploadID, "err", err)
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

package segments

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"time"
)

// The commit: the tail, the retirement of the version it replaces, the
// manifest (or small object), and the check of a lost answer.

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
	w.prog.commit.Store(true)
	w.result = w.commit(ctx)
	w.state = committed
	if w.result != nil && w.landed(context.WithoutCancel(ctx)) {
		w.o.Log.Warn("the commit's answer was an error, but the new version is in Swift", "object", w.object, "upload", w.uploadID, "err", w.result)
		w.result = nil
	}
	if w.result != nil {
		w.cleanup(context.WithoutCancel(ctx))
	}
	w.releaseHolds()
	w.cancel()
	w.o.Pool.unregister(w)
	return w.result
}

// landed reports whether the object's current version is this upload (a
// manifest PUT that Swift stored although its answer was lost or an
// error); then the upload's segments must stay. Called with w.mu held.
func (w *Writer) landed(ctx context.Context) bool {
	in, err := w.st.Head(ctx, w.o.Container, w.object)
	return err == nil && in.Meta[MetaUpload] == w.uploadID
}

// retireCurrent retires the version the commit is about to replace, before
// it is replaced (write-ahead: a crash right after leaves a record, never
// an unrecorded version). Called with w.mu held.
func (w *Writer) retireCurrent(ctx context.Context) error {
	v := w.o.Versions
	if v == nil {
		return nil
	}
	cur, err := w.st.Head(ctx, w.o.Container, w.object)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("commit %s: read the version it replaces: %w", w.object, err)
	}
	if err := v.Retire(ctx, cur, "overwrite"); err != nil {
		return fmt.Errorf("commit %s: %w", w.object, err)
	}
	w.failpoint("commit-after-retire")
	return nil
}

// commit does the work of Commit. Called with w.mu held.
func (w *Writer) commit(ctx context.Context) error {
	if w.err != nil {
		return w.err
	}
	if w.staging() != nil {
		if err := w.unstage(ctx); err != nil {
			return err
		}
	}
	meta := map[string]string{}
	for k, v := range w.o.Meta {
		meta[k] = v
	}
	meta[MetaMtime] = strconv.FormatFloat(float64(time.Now().UnixNano())/1e9, 'f', 6, 64)
	meta[MetaUpload] = w.uploadID
	po := PutOptions{ContentType: w.o.ContentType, Meta: meta}
	if po.ContentType == "" {
		po.ContentType = contentTypeFor(w.object)
	}
	if len(w.parts) == 0 && w.size.Load() <= w.segSize && w.under.size == 0 {
		return w.commitSmall(ctx, po)
	}
	return w.commitLarge(ctx, po)
}

// commitSmall publishes a file of at most one segment as one plain
// object, no segments. Called with w.mu held.
func (w *Writer) commitSmall(ctx context.Context, po PutOptions) error {
	size := w.size.Load()
	sb := w.open[0]
	if sb == nil {
		sb = &segBuf{}
	}
	w.sha.stop()
	w.o.Sums.sumsOf(sb, size, po.Meta)
	err := w.retireCurrent(ctx)
	if err == nil {
		po.Meta = sb.digests(0, size, po.Meta)
		_, err = w.st.Put(ctx, w.o.Container, w.object, sb.section(0, size), size, sb.md5hex(0, size), po)
		if err != nil {
			err = fmt.Errorf("put %s: %w", w.object, err)
		}
	}
	w.openChunks.Add(-sb.free(w.o.Pool))
	w.open[0] = nil
	if err == nil {
		w.failpoint("commit-after-put")
	}
	return err
}

// commitLarge uploads the tail, waits for every segment and publishes the
// SLO manifest (nested when it has too many entries). Called with w.mu
// held.
func (w *Writer) commitLarge(ctx context.Context, po PutOptions) error {
	w.sealAll()
	w.waitIdle()
	if w.err != nil {
		return w.err
	}
	switch sums := w.sha.sums(); {
	case sums != nil:
		maps.Copy(po.Meta, sums)
	case len(w.o.Sums.list()) == 0:
	case w.holes > w.o.MaxHashedHoles:
		w.o.Log.Info("no digest metadata (sha256, md5, sha512): the file has more holes than are worth hashing",
			"object", w.object, "holes", w.holes, "max_hashed_holes", w.o.MaxHashedHoles)
	default:
		w.o.Log.Info("no digest metadata (sha256, md5, sha512): the new version reuses data of the previous one that imagefs did not read",
			"object", w.object)
	}
	entries, err := w.entries(ctx)
	if err != nil {
		return err
	}
	for i := 0; len(entries) > w.o.MaxSegments; i++ {
		if entries, err = w.nest(ctx, entries, i); err != nil {
			return err
		}
	}
	if err := w.retireCurrent(ctx); err != nil {
		return err
	}
	if _, err := w.st.PutManifest(ctx, w.o.Container, w.object, entries, po); err != nil {
		return fmt.Errorf("put manifest %s: %w", w.object, err)
	}
	w.failpoint("commit-after-put")
	return nil
}

// entries builds the manifest entries of the sealed parts, uploading the
// zero segment that holes refer to if there are any.
func (w *Writer) entries(ctx context.Context) ([]ManifestEntry, error) {
	var zeroLen int64
	for _, p := range w.parts {
		if p.kind == partZero {
			zeroLen = max(zeroLen, p.size)
		}
		if p.kind == partRef && p.container == w.o.Container && p.object == w.object {
			return nil, fmt.Errorf("commit %s: the new version would reference the object it replaces", w.object)
		}
	}
	zeroObj := w.SegmentPrefix() + zeroSegment
	zeroTag := ""
	if zeroLen > 0 {
		w.holdOwn()
		if err := w.ensureSegmentContainer(); err != nil {
			return nil, err
		}
		zeroTag = zeroMD5(zeroLen)
		w.own = append(w.own, zeroObj)
		block, crcs := zeroDigests(zeroLen)
		if _, err := w.st.Put(ctx, w.o.SegmentContainer, zeroObj, io.NewSectionReader(zeroReader{}, 0, zeroLen), zeroLen, zeroTag,
			PutOptions{Meta: digestMeta(nil, block, crcs)}); err != nil {
			return nil, fmt.Errorf("put hole segment of %s: %w", w.object, err)
		}
	}
	entries := make([]ManifestEntry, 0, len(w.parts))
	for _, p := range w.parts {
		e := ManifestEntry{Container: p.container, Object: p.object, ETag: p.etag, Size: p.objSize}
		switch p.kind {
		case partZero:
			e = ManifestEntry{Container: w.o.SegmentContainer, Object: zeroObj, ETag: zeroTag, Size: zeroLen}
			e.Offset, e.Length = 0, p.size
		case partRef:
			if p.objOff != 0 || p.size != p.objSize {
				e.Offset, e.Length = p.objOff, p.size
			}
		}
		entries = append(entries, e)
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
		w.own = append(w.own, name)
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

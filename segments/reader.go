package segments

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// ReaderOptions configure a Reader.
type ReaderOptions struct {
	Retry RetryPolicy
	Log   *slog.Logger
}

// Reader reads one version of an object by ranged GETs against its
// segments. Each GET is pinned to the segment's ETag, so an object that
// changes underneath gives ErrStale, never mixed data. A body that breaks
// off is resumed from the last byte received. Safe for concurrent use.
type Reader struct {
	st ObjectStore
	m  *Manifest
	o  ReaderOptions
}

// NewReader returns a Reader of the version m describes. st should not
// retry Get itself: the Reader does, resuming where a body broke off.
func NewReader(st ObjectStore, m *Manifest, o ReaderOptions) *Reader {
	if o.Retry == (RetryPolicy{}) {
		o.Retry = DefaultRetryPolicy
	}
	if rs, ok := st.(*Retrying); ok {
		st = rs.ObjectStore // one retry loop, the one that resumes
	}
	return &Reader{st: st, m: m, o: o}
}

// Manifest returns the manifest the Reader reads.
func (r *Reader) Manifest() *Manifest { return r.m }

// Size is the object's size.
func (r *Reader) Size() int64 { return r.m.Size() }

// ReadAt reads len(p) bytes at off, following the io.ReaderAt contract:
// n < len(p) comes with an error (io.EOF at the end of the object).
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		i, inner, ok := r.m.Locate(off + int64(n))
		if !ok {
			return n, io.EOF
		}
		s := r.m.Segments[i]
		want := min(int64(len(p)-n), s.Length-inner)
		got, err := r.readSegment(ctx, s, inner, p[n:n+int(want)])
		n += got
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readSegment fills p from bytes [inner, inner+len(p)) of segment s,
// retrying and resuming under the retry policy.
func (r *Reader) readSegment(ctx context.Context, s Segment, inner int64, p []byte) (int, error) {
	got := 0
	obj := objPath(s.Container, s.Object)
	err := r.o.Retry.Do(ctx, r.o.Log, "GET", obj, func(ctx context.Context) error {
		rc, err := r.st.Get(ctx, s.Container, s.Object, s.Offset+inner+int64(got), int64(len(p)-got), s.ETag)
		if err != nil {
			return err
		}
		defer rc.Close()
		n, err := io.ReadFull(rc, p[got:])
		got += n
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// The segment is shorter than the manifest said.
			return &TransportError{Err: fmt.Errorf("GET %s: %w", obj, errShortBody)}
		}
		return err
	})
	if err != nil {
		return got, fmt.Errorf("read %s at %d: %w", obj, s.Offset+inner+int64(got), err)
	}
	return got, nil
}

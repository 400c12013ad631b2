package segments

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Reading back what a Writer has written (qemu-img does).

// ReadAt reads the new version as written so far, io.ReaderAt style
// (io.EOF at the end): bytes still in memory, on the staging disk,
// uploaded, or of Under. Reads of segments still uploading wait for them.
func (w *Writer) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	w.mu.Lock()
	if err := w.usable(); err != nil && !errors.Is(err, ErrCommitted) {
		w.mu.Unlock()
		return 0, err
	}
	size := w.size.Load()
	if off >= size {
		w.mu.Unlock()
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p, eof = p[:size-off], io.EOF
	}
	remote, err := w.sink.read(w, p, off)
	w.mu.Unlock()
	if err != nil {
		return 0, err
	}
	for _, r := range remote {
		if err := w.readRemote(ctx, r); err != nil {
			return 0, err
		}
	}
	return len(p), eof
}

// remoteRead is a piece of a read that comes from Swift.
type remoteRead struct {
	seg Segment
	dst []byte
}

// readLocked fills p from the segment window and the sealed parts;
// pieces in Swift are returned for reading without the lock. Called
// with w.mu held; it may wait for uploads.
func (w *Writer) readLocked(p []byte, off int64) ([]remoteRead, error) {
	var remote []remoteRead
	for n := int64(0); n < int64(len(p)); {
		pos := off + n
		dst := p[n:]
		if pos >= w.base {
			slot := int((pos - w.base) / w.segSize)
			if slot >= len(w.open) {
				// Beyond the window nothing was written.
				remote = w.under.read(dst, pos, remote)
				n += int64(len(dst))
				continue
			}
			if sb := w.open[slot]; sb != nil {
				rel := pos - sb.off
				dst = dst[:min(int64(len(dst)), w.segSize-rel)]
				if sp, ok := sb.written(rel); ok {
					k := min(int64(len(dst)), sp.hi-rel)
					sb.ReadAt(dst[:k], rel)
					n += k
					continue
				} else if sp.hi > sp.lo {
					dst = dst[:min(int64(len(dst)), sp.lo-rel)]
				}
			} else {
				dst = dst[:min(int64(len(dst)), w.base+int64(slot+1)*w.segSize-pos)]
			}
			remote = w.under.read(dst, pos, remote)
			n += int64(len(dst))
			continue
		}
		i := sort.Search(len(w.parts), func(i int) bool { return w.parts[i].off+w.parts[i].size > pos })
		pt := w.parts[i]
		inner := pos - pt.off
		k := min(int64(len(dst)), pt.size-inner)
		switch pt.kind {
		case partZero:
			clear(dst[:k])
		case partRef:
			remote = append(remote, remoteRead{seg: Segment{Container: pt.container, Object: pt.object, ETag: pt.etag,
				Offset: pt.objOff + inner, Length: k}, dst: dst[:k]})
		case partData:
			for pt.etag == "" && w.pending > 0 {
				w.idle.Wait() // still uploading
			}
			if pt.etag == "" {
				return nil, fmt.Errorf("read %s at %d: %w", w.object, pos, w.err)
			}
			remote = append(remote, remoteRead{seg: Segment{Container: pt.container, Object: pt.object, ETag: pt.etag,
				Offset: inner, Length: k}, dst: dst[:k]})
		}
		n += k
	}
	return remote, nil
}

// readRemote reads one piece from Swift, with the Reader's retries.
func (w *Writer) readRemote(ctx context.Context, r remoteRead) error {
	rd := NewReader(w.st, NewManifest([]Segment{r.seg}, ""), ReaderOptions{Retry: w.o.Retry, Log: w.o.Log})
	_, err := rd.ReadAt(ctx, r.dst, 0)
	return err
}

package segments

import (
	"context"
	"errors"
)

// Abandoning an upload: buffers, staging and its own segments go.

// Abort abandons the upload: nothing is published and the segments
// uploaded so far are deleted (best effort). It waits for running uploads.
func (w *Writer) Abort(ctx context.Context) {
	// First, without the lock: a WriteAt waiting for memory holds it, and
	// the memory comes back only when uploads end.
	w.cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != writing {
		return
	}
	w.state = aborted
	w.cleanup(ctx)
	w.releaseHolds()
	w.o.Pool.unregister(w)
}

// cleanup frees buffers and staging, waits for uploads and deletes this
// upload's segments. Called with w.mu held.
func (w *Writer) cleanup(ctx context.Context) {
	for i, sb := range w.open {
		if sb != nil {
			w.openChunks.Add(-sb.free(w.o.Pool))
			w.open[i] = nil
		}
	}
	w.sha.stop()
	w.waitIdle()
	if st := w.staging(); st != nil {
		st.close()
		w.sink = window{}
	}
	if err := w.deleteOwn(ctx); err != nil {
		w.o.Log.Warn("could not delete an abandoned upload's segments; gc will find them",
			"object", w.object, "upload", w.uploadID, "err", err)
	}
}

// deleteOwn deletes every object under this upload's prefix: those it
// knows it PUT, and those a listing shows. The names it knows matter:
// Swift updates container listings asynchronously, and a busy container
// server may list a segment PUT a moment ago only much later. Called with
// w.mu held.
func (w *Writer) deleteOwn(ctx context.Context) error {
	seen := map[string]bool{}
	objs := make([]string, 0, len(w.own))
	for _, o := range w.own {
		seen[o] = true
		objs = append(objs, o)
	}
	err := w.st.List(ctx, w.o.SegmentContainer, w.SegmentPrefix(), 0, func(in Info) error {
		if !seen[in.Name] {
			objs = append(objs, in.Name)
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		err = nil // no segment container: nothing was uploaded
	}
	if err == nil && len(objs) > 0 {
		err = w.st.DeleteMany(ctx, w.o.SegmentContainer, objs)
	}
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

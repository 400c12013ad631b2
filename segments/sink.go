package segments

import "context"

// sink is where a Writer's bytes go: the segment window, which streams
// them to Swift (window, the way every file starts), or a file on the
// staging disk (*staged). A Writer switches from the window to staging at
// most once, when a write goes back into data already uploaded
// (toStaging), and streams the staged file through the window at Commit
// (unstage). Every method is called with w.mu held.
type sink interface {
	// take writes p at off.
	take(ctx context.Context, w *Writer, p []byte, off int64) (int, error)
	// resize sets the size (Writer.Truncate has checked it).
	resize(w *Writer, size int64) error
	// read fills what p can of [off, off+len(p)) and returns the pieces
	// that have to come from Swift.
	read(w *Writer, p []byte, off int64) ([]remoteRead, error)
	// sync makes what was written durable (fsync).
	sync(w *Writer) error
	// behind reports whether off lies in data the sink can no longer
	// change (the window: uploaded): the Writer must stage first.
	behind(w *Writer, off int64) bool
}

// window is the sink of the segment window (writer.go).
type window struct{}

func (window) take(ctx context.Context, w *Writer, p []byte, off int64) (int, error) {
	return w.writeLocked(ctx, p, off)
}

func (window) resize(w *Writer, size int64) error {
	for i, sb := range w.open {
		if sb == nil {
			continue
		}
		if sb.off >= size {
			w.openChunks.Add(-sb.free(w.o.Pool))
			w.open[i] = nil
			continue
		}
		w.openChunks.Add(-sb.clip(size-sb.off, w.o.Pool))
	}
	return nil
}

func (window) read(w *Writer, p []byte, off int64) ([]remoteRead, error) { return w.readLocked(p, off) }

func (window) sync(w *Writer) error {
	w.sealAll()
	w.waitIdle()
	return w.err
}

func (window) behind(w *Writer, off int64) bool { return off < w.base }

// The staging sink (staging.go).

func (st *staged) take(ctx context.Context, w *Writer, p []byte, off int64) (int, error) {
	return st.writeAt(w, p, off)
}

func (st *staged) resize(w *Writer, size int64) error { return st.truncate(size) }

func (st *staged) read(w *Writer, p []byte, off int64) ([]remoteRead, error) {
	return st.readAt(w, p, off)
}

func (st *staged) sync(w *Writer) error { return st.f.Sync() }

func (st *staged) behind(*Writer, int64) bool { return false }

// staging returns the staged file, if the Writer has one. Called with
// w.mu held.
func (w *Writer) staging() *staged {
	st, _ := w.sink.(*staged)
	return st
}

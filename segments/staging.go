package segments

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync/atomic"
)

// ErrNoSpace: the staging directory's budget is used up.
var ErrNoSpace = errors.New("staging space used up")

// Staging is a local directory where files that are written out of order
// (qemu-img convert -O qcow2 goes back to update its tables) are kept
// until they are committed, within a byte budget shared by all files.
// Staging files are unlinked as soon as they are created, so a crash
// leaves nothing behind. Safe for concurrent use.
type Staging struct {
	dir    string
	budget int64 // bytes
	used   atomic.Int64
}

// stagingPattern names the staging files (unlinked right after creation).
const stagingPattern = "imagefs-staging-*"

// NewStaging checks that dir is a writable directory and returns a
// Staging that may use up to budget bytes in it.
func NewStaging(dir string, budget int64) (*Staging, error) {
	if budget <= 0 {
		return nil, fmt.Errorf("staging budget %d: must be positive", budget)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("staging directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("staging directory %s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, stagingPattern)
	if err != nil {
		return nil, fmt.Errorf("staging directory %s is not writable: %w", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return &Staging{dir: dir, budget: budget}, nil
}

// Dir is the staging directory.
func (s *Staging) Dir() string { return s.dir }

// Budget is the most bytes staged files may hold together.
func (s *Staging) Budget() int64 { return s.budget }

// Used is the number of bytes staged now.
func (s *Staging) Used() int64 { return s.used.Load() }

func (s *Staging) reserve(n int64) bool {
	for {
		u := s.used.Load()
		if u+n > s.budget {
			return false
		}
		if s.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (s *Staging) release(n int64) { s.used.Add(-n) }

func (s *Staging) create() (*os.File, error) {
	f, err := os.CreateTemp(s.dir, stagingPattern)
	if err != nil {
		return nil, fmt.Errorf("create staging file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("unlink staging file: %w", err)
	}
	return f, nil
}

// staged is the content of a staged file: written extents in a sparse
// local file, over Under (or zeros) elsewhere.
type staged struct {
	s        *Staging
	f        *os.File
	ext      []span // written extents, absolute, sorted and merged
	reserved int64  // bytes charged to the budget: the extents' total
}

// covered is the number of bytes of [lo, hi) the extents cover.
func (st *staged) covered(lo, hi int64) int64 {
	var n int64
	for _, e := range st.ext {
		if e.hi <= lo || e.lo >= hi {
			continue
		}
		n += min(e.hi, hi) - max(e.lo, lo)
	}
	return n
}

func (st *staged) add(lo, hi int64) {
	i := sort.Search(len(st.ext), func(i int) bool { return st.ext[i].hi >= lo })
	j := i
	for j < len(st.ext) && st.ext[j].lo <= hi {
		lo, hi = min(lo, st.ext[j].lo), max(hi, st.ext[j].hi)
		j++
	}
	st.ext = append(st.ext[:i], append([]span{{lo, hi}}, st.ext[j:]...)...)
}

// writeAt writes p at off, within the budget. Called with w.mu held.
func (st *staged) writeAt(w *Writer, p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	grow := int64(len(p)) - st.covered(off, end)
	if !st.s.reserve(grow) {
		w.o.Log.Error("staging directory full: the write fails with ENOSPC", "object", w.object,
			"off", off, "len", len(p), "staging_used", st.s.Used(), "staging_budget", st.s.budget)
		return 0, fmt.Errorf("%w: %s needs %d more bytes (staging budget %d bytes, %d in use)",
			ErrNoSpace, w.object, grow, st.s.budget, st.s.Used())
	}
	st.reserved += grow
	n, err := st.f.WriteAt(p, off)
	if err != nil {
		// The budget stays charged for the extent: the file may hold part of it.
		st.add(off, end)
		return n, fmt.Errorf("staging %s: %w", w.object, err)
	}
	st.add(off, end)
	if end > w.size.Load() {
		w.size.Store(end)
	}
	return n, nil
}

// truncate cuts the extents at size. Called with w.mu held.
func (st *staged) truncate(size int64) error {
	gone := st.covered(size, 1<<62)
	out := st.ext[:0]
	for _, e := range st.ext {
		if e.lo < size {
			out = append(out, span{e.lo, min(e.hi, size)})
		}
	}
	st.ext = out
	st.reserved -= gone
	st.s.release(gone)
	if err := st.f.Truncate(size); err != nil {
		return fmt.Errorf("truncate staging file: %w", err)
	}
	return nil
}

// readAt fills p from the staged extents; pieces of Under are returned
// for reading from Swift. Called with w.mu held.
func (st *staged) readAt(w *Writer, p []byte, off int64) ([]remoteRead, error) {
	var remote []remoteRead
	pos, end := off, off+int64(len(p))
	for _, e := range st.ext {
		if e.hi <= pos {
			continue
		}
		if e.lo >= end {
			break
		}
		if e.lo > pos {
			remote = w.under.read(p[pos-off:e.lo-off], pos, remote)
			pos = e.lo
		}
		hi := min(e.hi, end)
		if _, err := st.f.ReadAt(p[pos-off:hi-off], pos); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read staging file: %w", err)
		}
		pos = hi
	}
	if pos < end {
		remote = w.under.read(p[pos-off:], pos, remote)
	}
	return remote, nil
}

func (st *staged) close() {
	st.f.Close()
	st.s.release(st.reserved)
	st.reserved = 0
}

// toStaging moves the file to the staging disk because an operation (a
// write or a truncate at off) goes back into data already sealed. Without
// staging that is ErrNonSequential. Called with w.mu held.
func (w *Writer) toStaging(ctx context.Context, op string, off, n int64) error {
	if w.o.Staging == nil {
		w.o.Log.Error(op+" goes back into data already uploaded; imagefs files are written sequentially unless --staging-dir is set",
			"object", w.object, "off", off, "len", n, "uploaded_up_to", w.base)
		err := fmt.Errorf("%w: %s %s at offset %d (uploaded up to %d)", ErrNonSequential, op, w.object, off, w.base)
		w.fail(err)
		return err
	}
	// Everything written so far moves to disk: the sealed data (downloaded
	// again) and the open buffers. Under stays where it is.
	w.waitIdle()
	if w.err != nil {
		return w.err
	}
	var need int64
	for _, p := range w.parts {
		if p.kind == partData {
			need += p.size
		}
	}
	for _, sb := range w.open {
		if sb != nil {
			for _, sp := range sb.spans {
				need += sp.hi - sp.lo
			}
		}
	}
	s := w.o.Staging
	if !s.reserve(need) {
		err := fmt.Errorf("%w: staging %s needs %d bytes (staging budget %d bytes, %d in use)", ErrNoSpace, w.object, need, s.budget, s.Used())
		w.o.Log.Error("staging directory full: cannot stage a file written out of order", "object", w.object, "need", need, "err", err)
		w.fail(err)
		return err
	}
	f, err := s.create()
	if err != nil {
		s.release(need)
		w.fail(err)
		return err
	}
	st := &staged{s: s, f: f, reserved: need}
	// The work serves the file, not the request that triggered it.
	ctx = context.WithoutCancel(ctx)
	if err := w.stageExisting(ctx, st); err != nil {
		st.close()
		err = fmt.Errorf("stage %s: %w", w.object, err)
		w.fail(err)
		return err
	}
	w.o.Log.Info("file written out of order: staged on local disk until it is closed", "object", w.object,
		"op", op, "off", off, "uploaded_up_to", w.base, "staged_bytes", need, "staging_dir", s.dir)
	// The uploaded segments are not needed any more: Commit uploads the
	// staged file anew.
	if err := w.deleteOwn(ctx); err != nil {
		w.o.Log.Warn("could not delete the segments of a staged file; gc will find them", "object", w.object, "err", err)
	}
	w.sha.stop()
	w.sha = w.newHasher()
	w.parts, w.base, w.sink, w.own = nil, 0, st, nil
	w.prog.staged.Store(true)
	w.prog.uploaded.Store(0) // those segments are deleted: the file uploads again at Commit
	w.prog.done.Store(0)
	return nil
}

// stageExisting copies the sealed data and the open buffers to st.
func (w *Writer) stageExisting(ctx context.Context, st *staged) error {
	buf := make([]byte, ChunkSize)
	for _, p := range w.parts {
		if p.kind != partData {
			continue
		}
		for done := int64(0); done < p.size; {
			k := min(int64(len(buf)), p.size-done)
			r := remoteRead{seg: Segment{Container: p.container, Object: p.object, ETag: p.etag, Offset: done, Length: k}, dst: buf[:k]}
			if err := w.readRemote(ctx, r); err != nil {
				return err
			}
			if _, err := st.f.WriteAt(buf[:k], p.off+done); err != nil {
				return err
			}
			done += k
		}
		st.add(p.off, p.off+p.size)
	}
	for i, sb := range w.open {
		if sb == nil {
			continue
		}
		for _, sp := range sb.spans {
			b := buf[:0]
			for lo := sp.lo; lo < sp.hi; lo += int64(len(b)) {
				b = buf[:min(int64(len(buf)), sp.hi-lo)]
				sb.ReadAt(b, lo)
				if _, err := st.f.WriteAt(b, sb.off+lo); err != nil {
					return err
				}
			}
			st.add(sb.off+sp.lo, sb.off+sp.hi)
		}
		w.openChunks.Add(-sb.free(w.o.Pool))
		w.open[i] = nil
	}
	return nil
}

// unstage streams the staged file through the segment window, in order,
// at Commit. Called with w.mu held.
func (w *Writer) unstage(ctx context.Context) error {
	st := w.staging()
	w.sink = window{}
	w.prog.staged.Store(false)
	defer st.close()
	size := w.size.Load()
	buf := make([]byte, ChunkSize)
	for _, e := range st.ext {
		for pos := e.lo; pos < e.hi; {
			b := buf[:min(int64(len(buf)), e.hi-pos)]
			if _, err := st.f.ReadAt(b, pos); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read staging file of %s: %w", w.object, err)
			}
			if _, err := w.writeLocked(ctx, b, pos); err != nil {
				return err
			}
			pos += int64(len(b))
		}
	}
	w.size.Store(size)
	return nil
}

package fs

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// The write path: a write handle owns a segments.Writer for a new version
// of the file; FLUSH (close(2)) commits it and returns the real result.
//
// Several FLUSHes come for one handle when the descriptor was duplicated
// (the shell's `> file` opens, dups and closes before writing). A FLUSH
// before anything was written commits only a file that did not exist
// (touch, so it exists when touch returns); an existing file keeps its
// version, so an overwrite stays atomic. A write after a commit (through a
// duplicate) starts a new version from the committed one.

// writeHandle writes a new version of a file. close(2) commits it.
type writeHandle struct {
	f *fileNode

	mu    sync.Mutex // guards the fields below
	w     *segments.Writer
	state writeState
	start writeStart
	// openerClosed: the opener's close (flush) came; the file lives on in
	// processes it was passed to.
	openerClosed bool

	opener int // the process that opened the handle (0: unknown); see caller.go
}

// writeState is where a write handle's current upload (w) is in its life:
//
//	opened --write/truncate--> written --flush--> committed --write--> written (a new w)
//	   |                                              ^
//	   +--flush: a created file is committed (touch) -+
//	   +--flush: kept and unchanged, w given back ----+
//	any --flush of a writer killed by a signal--> abandoned (final)
type writeState int

const (
	opened    writeState = iota // nothing written to w yet
	written                     // data or a size change went to w
	committed                   // w is committed (or given back unchanged)
	abandoned                   // the writer died of a signal: w aborted
)

// writeStart is how w began: what an unchanged handle means at close.
type writeStart int

const (
	startCreated   writeStart = iota // the file did not exist: close commits it empty
	startTruncated                   // O_TRUNC of an existing file: unchanged, the old version stays
	startKept                        // without O_TRUNC: w starts from the current version
)

var (
	_ fusefs.FileWriter   = (*writeHandle)(nil)
	_ fusefs.FileFlusher  = (*writeHandle)(nil)
	_ fusefs.FileFsyncer  = (*writeHandle)(nil)
	_ fusefs.FileReleaser = (*writeHandle)(nil)
	_ fusefs.FileReader   = (*writeHandle)(nil)
)

// writer returns the upload to write to, starting a new one from the
// committed version after a commit.
func (h *writeHandle) writer(ctx context.Context) (*segments.Writer, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch h.state {
	case abandoned:
		return h.w, 0 // aborted: its writes fail with ErrAborted
	case committed:
		w, errno := h.f.startWrite(ctx, true)
		if errno != 0 {
			return nil, errno
		}
		h.w, h.start = w, startKept
	}
	h.state = written
	return h.w, 0
}

func (h *writeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	w, errno := h.writer(ctx)
	if errno != 0 {
		return 0, errno
	}
	n, err := w.WriteAt(ctx, data, off)
	if err != nil {
		return uint32(n), h.f.root.errnoOf("write", h.f.path(), err)
	}
	return uint32(n), 0
}

// truncate sets the size of the version being written (ftruncate).
func (h *writeHandle) truncate(ctx context.Context, size int64) syscall.Errno {
	w, errno := h.writer(ctx)
	if errno != 0 {
		return errno
	}
	return h.f.root.errnoOf("truncate", h.f.path(), w.Truncate(ctx, size))
}

// Read reads the version being written: qemu-img reads back what it
// wrote, and tools that open O_RDWR read before they write.
func (h *writeHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	w := h.w
	h.mu.Unlock()
	n, err := w.ReadAt(h.f.root.lifetime(), dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.f.root.errnoOf("read", h.f.path(), err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Flush commits the file: close(2) waits for it and gets its result. A
// flush from a process killed by a signal abandons the upload instead, and
// one from another process than the opener (a forked child closing its
// inherited copy, e.g. at exec) changes nothing while the opener still has
// the file: see caller.go. Once the opener has closed it or is gone, the
// processes left with the file are the ones whose close may be the last:
// their flush commits, so that their close gets the real result too.
func (h *writeHandle) Flush(ctx context.Context) syscall.Errno {
	pid := callerPid(ctx)
	p := processOf(pid)
	if h.opener != 0 && p != 0 && p != h.opener {
		h.mu.Lock()
		let := h.openerClosed
		h.mu.Unlock()
		if !let && processAlive(h.opener) {
			return 0
		}
	}
	if p == h.opener {
		defer func() {
			h.mu.Lock()
			h.openerClosed = true
			h.mu.Unlock()
		}()
	}
	if killedBySignal(pid) {
		h.mu.Lock()
		h.state = abandoned
		w := h.w
		h.mu.Unlock()
		h.f.abort(h.f.root.lifetime(), w, "writer killed by a signal")
		return syscall.EINTR
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.state == abandoned:
		return syscall.EIO
	case h.state == opened && h.start == startKept:
		// Opened for writing (O_RDWR, no O_TRUNC) and nothing changed:
		// give the file's write slot back now rather than at RELEASE, which
		// the kernel sends later, so that the next open for writing (libvirt
		// closes and reopens a disk) is not refused as busy. A write
		// through a duplicate starts again from the current version.
		h.f.abort(h.f.root.lifetime(), h.w, "")
		h.state = committed
		return 0
	case h.state == opened && h.start == startTruncated:
		return 0 // keep the existing version until something is written
	}
	return h.commit(h.f.root.lifetime())
}

// commit commits the current upload. Called with h.mu held.
func (h *writeHandle) commit(ctx context.Context) syscall.Errno {
	if h.state == committed {
		return 0
	}
	err := h.w.Commit(ctx)
	h.f.finishWrite(h.w, err == nil)
	h.state = committed
	if err == nil {
		h.f.root.stats.commits.Add(1)
	} else {
		h.f.root.stats.commitFailures.Add(1)
	}
	if errors.Is(err, segments.ErrAborted) {
		return syscall.EIO
	}
	return h.f.root.errnoOf("close", h.f.path(), err)
}

func (h *writeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.mu.Lock()
	w, state := h.w, h.state
	h.mu.Unlock()
	if state == committed {
		return 0
	}
	return h.f.root.errnoOf("fsync", h.f.path(), w.Sync(h.f.root.lifetime()))
}

// Release finishes what Flush left: a truncated file that nothing was
// written to is committed (`: > file`), an upload of a killed writer or
// one opened without O_TRUNC and never written to is abandoned.
func (h *writeHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.state == committed:
	case h.state == abandoned:
		h.f.abort(h.f.root.lifetime(), h.w, "writer killed by a signal")
	case h.state == opened && h.start == startKept:
		h.f.abort(h.f.root.lifetime(), h.w, "") // opened for writing, nothing changed
	default:
		h.commit(h.f.root.lifetime())
	}
	return 0
}

package fs

import (
	"context"
	"errors"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// writeHandle writes a new version of a file. close(2) commits it.
type writeHandle struct {
	f *fileNode
	w *segments.Writer

	mu     sync.Mutex // guards wrote, killed
	wrote  bool       // data or a size change arrived through this handle
	killed bool       // the writing process died of a signal
}

var (
	_ fusefs.FileWriter   = (*writeHandle)(nil)
	_ fusefs.FileFlusher  = (*writeHandle)(nil)
	_ fusefs.FileFsyncer  = (*writeHandle)(nil)
	_ fusefs.FileReleaser = (*writeHandle)(nil)
	_ fusefs.FileReader   = (*writeHandle)(nil)
)

func (h *writeHandle) touched() {
	h.mu.Lock()
	h.wrote = true
	h.mu.Unlock()
}

func (h *writeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.touched()
	n, err := h.w.WriteAt(ctx, data, off)
	if err != nil {
		return uint32(n), h.f.root.errnoOf("write", h.f.rel, err)
	}
	return uint32(n), 0
}

func (h *writeHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	// Reading back an image while it is written is not supported yet.
	return nil, syscall.EOPNOTSUPP
}

// Flush commits the file: close(2) waits for it and gets its result. A
// flush before anything was written (the shell's `> file` closes a
// duplicate first) leaves the upload open for the writes that follow. A
// flush from a process killed by a signal abandons the upload instead.
func (h *writeHandle) Flush(ctx context.Context) syscall.Errno {
	if c, ok := fuse.FromContext(ctx); ok && killedBySignal(c.Pid) {
		h.mu.Lock()
		h.killed = true
		h.mu.Unlock()
		h.f.abort(context.WithoutCancel(ctx), "writer killed by a signal")
		return syscall.EINTR
	}
	h.mu.Lock()
	wrote := h.wrote
	h.mu.Unlock()
	if !wrote {
		return 0
	}
	return h.commit(context.WithoutCancel(ctx))
}

func (h *writeHandle) commit(ctx context.Context) syscall.Errno {
	err := h.w.Commit(ctx)
	h.f.finishWrite(h.w, err == nil)
	if errors.Is(err, segments.ErrAborted) {
		return syscall.EIO
	}
	return h.f.root.errnoOf("close", h.f.rel, err)
}

func (h *writeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.f.root.errnoOf("fsync", h.f.rel, h.w.Sync(ctx))
}

// Release finishes what Flush left: an empty file is committed (touch), an
// upload of a killed writer is abandoned.
func (h *writeHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	killed := h.killed
	h.mu.Unlock()
	if killed {
		h.f.abort(h.f.root.ctx, "writer killed by a signal")
		return 0
	}
	// Commit is idempotent: after a successful Flush this is a no-op.
	h.commit(h.f.root.ctx)
	return 0
}

package fs

import (
	"context"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FUSE passthrough: a read-only open of a version that is whole in the
// disk cache (cache.File.Whole) hands the kernel the cache's whole-image
// file, so its reads never enter the daemon. It needs Linux 6.9 or later
// and CAP_SYS_ADMIN; mount probes for it once (and says so once when it
// is unavailable). Otherwise, and for a version not whole yet or a file
// with an upload in progress, the open reads through the daemon as
// before.
//
// go-fuse registers one backing file per inode, shared by every
// passthrough open of it until the last is released. So a node hands out
// passthrough for one version at a time: while opens of version A hold the
// backing, an open of version B reads through the daemon.

// passthrough is the mount's passthrough state, shared by its roots.
type passthrough struct {
	on    atomic.Bool  // the kernel took a backing file at mount
	opens atomic.Int64 // opens passed through (Stats.Passthroughs)
}

// start probes for passthrough on a new mount, if wanted, and logs once
// what the mount does.
func (pt *passthrough) start(server *fuse.Server, o Options) {
	if !o.Passthrough {
		return
	}
	if err := probePassthrough(server); err != nil {
		o.Log.Warn("FUSE passthrough unavailable (it needs Linux 6.9 or later and CAP_SYS_ADMIN): images whole in the disk cache are read through the daemon",
			"err", err)
		return
	}
	pt.on.Store(true)
	o.Log.Info("FUSE passthrough available: read-only opens of images whole in the disk cache are served by the kernel from the cache's file")
}

// probePassthrough registers a backing file and drops it again: whether
// the kernel and our privileges allow passthrough.
func probePassthrough(server *fuse.Server) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	fh, err := os.Open(exe)
	if err != nil {
		return err
	}
	defer fh.Close()
	id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fh.Fd())})
	if errno != 0 {
		return errno
	}
	server.UnregisterBackingFd(id)
	return nil
}

// passthroughHandle is a read handle whose reads the kernel serves from
// the whole-image file; the daemon's Read is there for a kernel that
// declines it after all. whole is nil when the inode passes through
// already (go-fuse reuses its backing file).
type passthroughHandle struct {
	*readHandle
	whole *os.File
}

var (
	_ fusefs.FilePassthroughFder = (*passthroughHandle)(nil)
	_ fusefs.FileReleaser        = (*passthroughHandle)(nil)
)

// PassthroughFd implements fusefs.FilePassthroughFder.
func (h *passthroughHandle) PassthroughFd() (int, bool) {
	if h.whole == nil {
		return 0, false
	}
	return int(h.whole.Fd()), true
}

// Release closes the whole file. The kernel dropped the inode's backing
// file before it sent the RELEASE; go-fuse drops its id of it only after
// this returns, so another version waits a moment (ptFreed) before it may
// pass through.
func (h *passthroughHandle) Release(ctx context.Context) syscall.Errno {
	h.readHandle.Release(ctx)
	if h.whole != nil {
		h.whole.Close()
	}
	f := h.f
	f.mu.Lock()
	if f.ptOpens--; f.ptOpens == 0 {
		f.ptFreed = time.Now()
	}
	f.mu.Unlock()
	return 0
}

// errPassedThrough is the refusal of an open the kernel would fail with
// EIO: every open of an inode that passes through must pass through the
// same file.
func (f *fileNode) errPassedThrough(op string) syscall.Errno {
	f.root.o.Log.Warn(op+" refused: the file is open with FUSE passthrough (of another version, or now for writing) and the kernel takes no other kind of open of it meanwhile; "+
		"close those opens first (or mount with --passthrough=false)", "path", f.path())
	return syscall.EBUSY
}

// passThrough opens rh, of version key: passed through (ph) where it may
// (passthrough works on this mount, the version is whole in the cache,
// nothing writes the file, no open reads it through the page cache: the
// kernel refuses to mix the two on one inode), else through the page cache
// (counted in cachedOpens). While the inode passes through another
// version, it refuses (EBUSY).
func (f *fileNode) passThrough(rh *readHandle, key string) (*passthroughHandle, syscall.Errno) {
	r := f.root
	var whole *os.File
	if r.o.Passthrough && r.o.pt.on.Load() && key != "" && !r.busy(f, f.object()) {
		whole, _ = rh.file.Whole()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.ptOpens > 0 && f.ptKey == key:
		if whole != nil {
			whole.Close() // go-fuse has the inode's backing file already
		}
		f.ptOpens++
		r.o.pt.opens.Add(1)
		return &passthroughHandle{readHandle: rh}, 0
	case f.ptOpens > 0:
		if whole != nil {
			whole.Close()
		}
		return nil, f.errPassedThrough("open")
	case whole != nil && f.cachedOpens == 0 && (f.ptKey == key || time.Since(f.ptFreed) > time.Second):
		f.ptKey = key
		f.ptOpens++
		r.o.pt.opens.Add(1)
		return &passthroughHandle{readHandle: rh, whole: whole}, 0
	}
	if whole != nil {
		whole.Close()
	}
	f.cachedOpens++
	rh.cached = true
	return nil, 0
}

// passingThrough reports whether the inode passes through now (an open
// for writing is refused then). The kernel sends RELEASE after close(2)
// has returned, so a reader's last close may still be on its way: it
// waits a moment for that before it says yes.
func (f *fileNode) passingThrough() bool {
	deadline := time.Now().Add(releaseWait)
	for {
		f.mu.Lock()
		n := f.ptOpens
		f.mu.Unlock()
		if n == 0 || time.Now().After(deadline) {
			return n > 0
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// releaseWait is how long an open for writing waits for the RELEASE of
// passed-through opens that were closed just before.
const releaseWait = time.Second

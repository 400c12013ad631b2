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
// declines it after all.
type passthroughHandle struct {
	*readHandle
	whole *os.File
}

var (
	_ fusefs.FilePassthroughFder = (*passthroughHandle)(nil)
	_ fusefs.FileReleaser        = (*passthroughHandle)(nil)
)

// PassthroughFd implements fusefs.FilePassthroughFder.
func (h *passthroughHandle) PassthroughFd() (int, bool) { return int(h.whole.Fd()), true }

// Release closes the whole file and, a moment later, lets another version
// pass through: go-fuse drops the inode's backing file only after this
// returns.
func (h *passthroughHandle) Release(ctx context.Context) syscall.Errno {
	h.readHandle.Release(ctx)
	h.whole.Close()
	f := h.f
	time.AfterFunc(time.Second, func() {
		f.mu.Lock()
		f.ptOpens--
		f.mu.Unlock()
	})
	return 0
}

// passThrough returns the whole file of version key if rh may pass
// through: passthrough works on this mount, nothing writes the file, and
// no other version of it passes through now.
func (f *fileNode) passThrough(rh *readHandle, key string) (*passthroughHandle, bool) {
	r := f.root
	if !r.o.Passthrough || !r.o.pt.on.Load() || key == "" || r.busy(f, f.object()) {
		return nil, false
	}
	whole, ok := rh.file.Whole()
	if !ok {
		return nil, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ptOpens > 0 && f.ptKey != key {
		whole.Close()
		return nil, false
	}
	f.ptKey = key
	f.ptOpens++
	r.o.pt.opens.Add(1)
	return &passthroughHandle{readHandle: rh, whole: whole}, true
}

package fs

import (
	"context"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// FUSE passthrough: a read-only open of a version that is whole in the
// disk cache (cache.File.Whole) hands the kernel the cache's whole-image
// file, so its reads never enter the daemon. It needs Linux 6.9 or later
// and CAP_SYS_ADMIN; mount probes for it once (and says so once when it
// is unavailable). Otherwise, and for a version not whole yet or a file
// with an upload in progress, the open reads through the daemon as
// before.
//
// The kernel ties a backing file to the inode: while an inode has
// passthrough opens, it fails (EIO) every other open of it that does not
// pass through the same file (fs/fuse/iomode.c), and go-fuse registers one
// backing file per inode. So one inode passes through one version, and
// while it does, it stands for that version, not for its name (pinned:
// its attributes are the version's). When the name needs another open (a
// newer version, here or from another host, or an open for writing), the
// node is detached: the name gets a new inode number, so its next lookup
// makes a new node, and the old node lives on for the opens that pass
// through until the kernel forgets it.
//
//   - A lookup that finds another version than the one the name's node
//     passes through answers the new node (the kernel drops its dentry
//     when a lookup answers another node ID).
//   - An open that reaches the old node through a dentry the kernel still
//     trusts (within the entry TTL) detaches it and fails with ESTALE: the
//     kernel's open(2) then retries once with a forced lookup of the last
//     component (LOOKUP_REVAL, fs/namei.c do_filp_open), which answers the
//     new node, and opens that. The caller never sees the ESTALE.
//
// A name that never passes through keeps its inode number.
// passthrough is the mount's passthrough state, shared by its roots.
type passthrough struct {
	on       atomic.Bool  // the kernel took a backing file at mount
	opens    atomic.Int64 // opens passed through (Stats.Passthroughs)
	detached atomic.Int64 // nodes detached from their names (Stats.PassthroughNewInodes)
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

// pinnedLocked reports whether f stands for the version it passes
// through (ptInfo) rather than for its name. Called with f.mu held.
func (f *fileNode) pinnedLocked() bool { return f.ptOpens > 0 || f.detached }

// passingThrough reports whether f has opens that pass through.
func (f *fileNode) passingThrough() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ptOpens > 0
}

// passesThroughOther reports whether f passes through another version
// than in (what Swift says of the name now).
func (f *fileNode) passesThroughOther(in segments.Info) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ptOpens > 0 && !f.ptInfo.SameVersion(in)
}

// detach gives f's name a new inode number: its next lookup makes a new
// node, and f lives on for the opens that pass through it (see the top of
// this file).
func (f *fileNode) detach(why string) {
	f.mu.Lock()
	done := f.detached
	f.detached = true
	f.mu.Unlock()
	if done {
		return
	}
	f.root.inos.drop(f.path(), false, f.StableAttr().Ino)
	f.root.o.pt.detached.Add(1)
	f.root.o.Log.Info("a new inode for the file: its old one is open with FUSE passthrough of the version it had, and stays so for those opens",
		"path", f.path(), "why", why, "old_ino", f.StableAttr().Ino)
}

// elsewhere is the answer to an open that the node cannot take because
// it passes through (or passed through) another version: the node is
// detached and the kernel retries the open on the name's new node.
func (f *fileNode) elsewhere(why string) syscall.Errno {
	f.detach(why)
	return syscall.ESTALE
}

// passThrough opens rh, of version key: passed through (ph) where it may
// (passthrough works on this mount, the version is whole in the cache,
// nothing writes the file, no open reads it through the page cache: the
// kernel refuses to mix the two on one inode), else through the page cache
// (counted in cachedOpens). While the inode passes through another
// version, the open goes to a new inode (ESTALE: see elsewhere).
func (f *fileNode) passThrough(rh *readHandle, key string) (*passthroughHandle, syscall.Errno) {
	r := f.root
	var whole *os.File
	if r.o.Passthrough && r.o.pt.on.Load() && key != "" && !r.busy(f, f.object()) {
		whole, _ = rh.file.Whole()
	}
	f.mu.Lock()
	switch {
	case f.ptOpens > 0 && f.ptKey == key:
		f.ptOpens++
		f.mu.Unlock()
		if whole != nil {
			whole.Close() // go-fuse has the inode's backing file already
		}
		r.o.pt.opens.Add(1)
		return &passthroughHandle{readHandle: rh}, 0
	case f.ptOpens > 0 || f.detached:
		f.mu.Unlock()
		if whole != nil {
			whole.Close()
		}
		return nil, f.elsewhere("opened for reading a newer version")
	case whole != nil && f.cachedOpens == 0 && (f.ptKey == key || time.Since(f.ptFreed) > time.Second):
		f.ptKey, f.ptInfo = key, rh.obj.Info
		f.ptOpens++
		f.mu.Unlock()
		r.o.pt.opens.Add(1)
		return &passthroughHandle{readHandle: rh, whole: whole}, 0
	}
	f.cachedOpens++
	f.mu.Unlock()
	if whole != nil {
		whole.Close()
	}
	rh.cached = true
	return nil, 0
}

// openForWrite checks that f may take an open for writing: not while it
// passes through (the kernel would fail the open), nor once detached. The
// kernel sends RELEASE after close(2) has returned, so the passthrough
// opens counted here may be closed already; the open goes to a new inode
// all the same, at once.
func (f *fileNode) openForWrite() syscall.Errno {
	f.mu.Lock()
	pinned := f.pinnedLocked()
	f.mu.Unlock()
	if pinned {
		return f.elsewhere("opened for writing")
	}
	return 0
}

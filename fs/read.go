package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/segments"
)

// The read path: open resolves the object once (plain, SLO, DLO) into a
// manifest pinned by ETags; reads go through the block cache (memory and
// disk, shared by every handle of the same version) and a per-handle
// cache.Stream that prefetches sequential reads. segments.Reader is the
// cache's source: one ranged GET per segment piece, resumed on errors.

// readHandle reads one version of a file, which it holds open
// (segments.Object) so that no host deletes it meanwhile.
type readHandle struct {
	f     *fileNode
	file  *cache.File
	s     *cache.Stream
	obj   *segments.Object
	trace *traceRun // the version's boot trace work; nil with traces off
	// cached: opened through the page cache (counted in
	// fileNode.cachedOpens).
	cached bool
}

var (
	_ fusefs.FileReader   = (*readHandle)(nil)
	_ fusefs.FileReleaser = (*readHandle)(nil)
	_ cache.Source        = (*segments.Reader)(nil)
)

// openRead resolves the current version of the file and opens it for
// reading. The kernel may keep its cached pages when the version is the
// one it last opened (FOPEN_KEEP_CACHE): images are read again and again
// while they do not change.
func (f *fileNode) openRead(ctx context.Context) (fusefs.FileHandle, uint32, syscall.Errno) {
	r := f.root
	obj, err := r.c.Open(r.lifetime(), f.object())
	if err != nil {
		return nil, 0, r.errnoOf("open", f.path(), err)
	}
	f.setInfo(obj.Info)
	r.meta.Put(f.object(), obj.Info)
	key := obj.Manifest.Version
	file := r.blocks.Open(key, obj.Size(), obj.Reader)
	h := &readHandle{f: f, file: file, s: file.NewStream(r.o.ReadAhead), obj: obj, trace: r.openTrace(f.object(), key, file)}
	f.mu.Lock()
	keep := key != "" && f.readVersion == key
	f.readVersion = key
	f.mu.Unlock()
	var flags uint32
	if keep {
		flags |= fuse.FOPEN_KEEP_CACHE
	}
	ph, errno := f.passThrough(h, key)
	if errno != 0 {
		h.trace.close()
		h.s.Close()
		obj.Close()
		return nil, 0, errno
	}
	if ph != nil {
		return ph, flags, 0 // go-fuse drops KEEP_CACHE for passthrough
	}
	return h, flags, 0
}

func (h *readHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.trace.read(off, int64(len(dest)))
	n, err := h.s.ReadAt(h.f.root.lifetime(), dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.f.root.errnoOf("read", h.f.path(), err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Release drops the handle's prefetches and its hold.
func (h *readHandle) Release(ctx context.Context) syscall.Errno {
	h.trace.close()
	h.s.Close()
	h.obj.Close()
	if h.cached {
		h.f.mu.Lock()
		h.f.cachedOpens--
		h.f.mu.Unlock()
	}
	return 0
}

// SetKernelReadahead sets the kernel's readahead for the mount at dir
// (the bdi's read_ahead_kb; FUSE cannot raise it during INIT). Buffered
// sequential reads then arrive as many large, parallel READs. Needs root.
func SetKernelReadahead(dir string, bytes int64) error {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return err
	}
	major := (st.Dev >> 8) & 0xfff
	minor := (st.Dev & 0xff) | ((st.Dev >> 12) & 0xfff00)
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	return os.WriteFile(p, []byte(strconv.FormatInt(bytes>>10, 10)), 0)
}

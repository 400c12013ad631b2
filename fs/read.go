package fs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// readHandle reads one version of a file, which it holds (segments.Hold)
// so that no host deletes it while it is open.
type readHandle struct {
	f    *fileNode
	s    *cache.Stream
	hold *segments.Hold
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
	ctx = r.uninterruptible(ctx)
	m, in, err := segments.Resolve(ctx, r.o.Store, r.o.Container, f.object())
	if err != nil {
		return nil, 0, r.errnoOf("open", f.path(), err)
	}
	f.setInfo(in)
	r.meta.Put(f.object(), in)
	rd := segments.NewReader(r.o.Store, m, segments.ReaderOptions{Retry: r.o.Retry, Log: r.o.Log, StallTimeout: r.o.StallTimeout})
	key := versionKey(r.o.Container, f.object(), m)
	h := &readHandle{f: f, s: r.blocks.Open(key, m.Size(), rd).NewStream(r.o.ReadAhead)}
	if in.SLO || in.DLO != "" {
		// Its segments outlive an overwrite while it is held; a plain
		// object is replaced in place, so there is nothing to hold.
		h.hold = r.versions.Hold(m)
	}
	f.mu.Lock()
	keep := key != "" && f.readVersion == key
	f.readVersion = key
	f.mu.Unlock()
	var flags uint32
	if keep {
		flags |= fuse.FOPEN_KEEP_CACHE
	}
	return h, flags, 0
}

func (h *readHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.s.ReadAt(h.f.root.uninterruptible(ctx), dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.f.root.errnoOf("read", h.f.path(), err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// uninterruptible is the context opens and reads wait under: the mount's
// lifetime rather than the request's. The kernel sends FUSE an INTERRUPT
// for any signal the caller gets, even one whose handler asks for
// restarted system calls (SIGCHLD, qemu's timer and IPI signals); EINTR
// from open or read then fails programs that never see it from a local
// disk (qemu-img failed to open images that way). A disk read is not
// interruptible either, and a fatal signal ends the wait in the kernel.
func (r *Root) uninterruptible(context.Context) context.Context { return r.ctx }

// Release drops the handle's prefetches and its hold.
func (h *readHandle) Release(ctx context.Context) syscall.Errno {
	h.s.Close()
	h.hold.Release()
	return 0
}

// versionKey names one version of an object for the block cache: the
// object's name and every segment it is made of, with their ETags. Two
// opens of an unchanged object get the same key (and share cached blocks,
// across remounts too); any change to the object or its segments gives
// another. "" if a segment has no ETag: such an object cannot be pinned,
// so nothing of it is shared.
func versionKey(container, object string, m *segments.Manifest) string {
	h := sha256.New()
	fmt.Fprintf(h, "imagefs-version-1\x00%s\x00%s\x00%d\x00", container, object, m.Size())
	for _, s := range m.Segments {
		if s.ETag == "" {
			return ""
		}
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d\x00%d\x00", s.Container, s.Object, s.ETag, s.Offset, s.Length)
	}
	return hex.EncodeToString(h.Sum(nil))
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

package fs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// The extended attributes that expose an image's whole-file digests,
// computed while it was written (see segments.Sums), in hex.
const (
	XattrSHA256 = "user.imagefs.sha256"
	XattrMD5    = "user.imagefs.md5"    // Glance's checksum
	XattrSHA512 = "user.imagefs.sha512" // Glance's os_hash_value (os_hash_algo sha512)
)

// sumXattrs maps each digest xattr to its metadata key, in listing order.
var sumXattrs = []struct{ name, meta string }{
	{XattrSHA256, segments.MetaSHA256},
	{XattrMD5, segments.MetaMD5},
	{XattrSHA512, segments.MetaSHA512},
}

// sumMeta returns the metadata key behind a digest xattr.
func sumMeta(attr string) (string, bool) {
	for _, x := range sumXattrs {
		if x.name == attr {
			return x.meta, true
		}
	}
	return "", false
}

// XattrUpload is the extended attribute of a file being written: the state
// of its upload (uploadXattr). A file with no upload in progress (a
// committed file) has none: ENODATA.
const XattrUpload = "user.imagefs.upload"

// uploadXattr is the value of XattrUpload: key=value pairs, one line.
func uploadXattr(p segments.Progress) string {
	return fmt.Sprintf("state=%s written=%d uploaded=%d segments_in_flight=%d segments_queued=%d segments_done=%d",
		p.State, p.Written, p.Uploaded, p.InFlight, p.Queued, p.Done)
}

// fileNode is a file: one object.
type fileNode struct {
	fusefs.Inode
	root *Root
	relp atomic.Pointer[string] // path relative to the mount; a rename changes it

	mu     sync.Mutex // guards the fields below
	info   segments.Info
	infoAt time.Time
	w      *segments.Writer // upload in progress, nil if none
	// readVersion is the version key of the last read open: the kernel
	// may hold pages of it (FOPEN_KEEP_CACHE).
	readVersion string
	// ptKey is the version the kernel reads from the cache's whole file
	// (passthrough.go) while ptOpens > 0, ptInfo what Swift said of it.
	ptKey   string
	ptInfo  segments.Info
	ptOpens int
	ptFreed time.Time // when the last passthrough open was released
	// detached: the file's name leads to another node now; this one
	// lives on for its passthrough opens (passthrough.go).
	detached bool
	// cachedOpens are the read opens through the page cache: while there
	// are any, the kernel refuses a passthrough open (EIO).
	cachedOpens int
}

var (
	_ fusefs.NodeGetattrer   = (*fileNode)(nil)
	_ fusefs.NodeSetattrer   = (*fileNode)(nil)
	_ fusefs.NodeOpener      = (*fileNode)(nil)
	_ fusefs.NodeGetxattrer  = (*fileNode)(nil)
	_ fusefs.NodeListxattrer = (*fileNode)(nil)
	_ fusefs.NodeReleaser    = (*fileNode)(nil)
)

func newFileNode(r *Root, rel string) *fileNode {
	f := &fileNode{root: r}
	f.setPath(rel)
	return f
}

// path is the file's path relative to the mount, as of now.
func (f *fileNode) path() string { return *f.relp.Load() }

func (f *fileNode) setPath(rel string) { f.relp.Store(&rel) }

func (f *fileNode) object() string { return f.root.object(f.path()) }

// OnForget drops the file's inode number once the kernel forgot it.
func (f *fileNode) OnForget() { f.root.inos.drop(f.path(), false, f.StableAttr().Ino) }

// setInfo records what Swift said of the file. A listing's entry counts
// from its page's request, and does not replace a newer answer; of the
// version a HEAD told of, it keeps the HEAD's metadata (stored mtime).
func (f *fileNode) setInfo(in segments.Info) {
	at := time.Now()
	if in.Listed() {
		at = in.ListedAt
	}
	f.mu.Lock()
	if in.Listed() && in.Meta == nil && !f.info.Listed() && f.info.SameVersion(in) {
		// The version a HEAD told of: keep what only the HEAD knows.
		in.Meta, in.SLO, in.DLO = f.info.Meta, f.info.SLO, f.info.DLO
	}
	if !at.Before(f.infoAt) {
		f.info, f.infoAt = in, at
	}
	f.mu.Unlock()
}

// refreshFull is refresh for what a listing does not tell (metadata).
func (f *fileNode) refreshFull(ctx context.Context) error {
	if err := f.refresh(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	listed := f.w == nil && !f.pinnedLocked() && f.info.Listed()
	f.mu.Unlock()
	if !listed {
		return nil
	}
	in, err := f.root.headFull(ctx, f.object())
	if err != nil {
		return err
	}
	f.setInfo(in)
	return nil
}

// versionLocked is what Swift said of the version the node stands for:
// the one it passes through while pinned, else its name's. Called with
// f.mu held.
func (f *fileNode) versionLocked() segments.Info {
	if f.pinnedLocked() {
		return f.ptInfo
	}
	return f.info
}

// fillAttr reports the size and times the node knows now.
func (f *fileNode) fillAttr(a *fuse.Attr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a.Mode = syscall.S_IFREG | f.root.o.FileMode
	a.Nlink = 1
	a.Blksize = 1 << 20 // cp and dd size their buffers from this
	if f.w != nil {
		a.Size = uint64(f.w.Size())
		setAttrTime(a, time.Now())
	} else {
		// A pinned node's is the version the kernel reads from the
		// cache's file: a VM's fstat or lseek(SEEK_END) must not see
		// another version's size.
		in := f.versionLocked()
		a.Size = uint64(in.Size)
		setAttrTime(a, mtime(in))
	}
	a.Blocks = (a.Size + 511) / 512
	f.root.owner(a)
}

// mtime is X-Object-Meta-Mtime when present (swift CLI, rclone), else
// Swift's Last-Modified.
func mtime(in segments.Info) time.Time {
	if v, ok := in.Meta[segments.MetaMtime]; ok {
		if secs, err := strconv.ParseFloat(v, 64); err == nil {
			s := int64(secs)
			return time.Unix(s, int64((secs-float64(s))*1e9))
		}
	}
	return in.LastModified
}

// refresh re-reads the object's metadata when it is older than the TTL.
func (f *fileNode) refresh(ctx context.Context) error {
	f.mu.Lock()
	fresh := f.w != nil || f.pinnedLocked() || time.Since(f.infoAt) < f.root.o.AttrTTL
	f.mu.Unlock()
	if fresh {
		return nil
	}
	in, err := f.root.head(ctx, f.object())
	if err != nil {
		return err
	}
	f.setInfo(in)
	return nil
}

func (f *fileNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if err := f.refresh(ctx); err != nil {
		return f.root.errnoOf("getattr", f.path(), err)
	}
	f.fillAttr(&out.Attr)
	return 0
}

func (f *fileNode) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := f.root.refuseWrite("setattr", f.path()); errno != 0 {
		return errno
	}
	if errno := f.root.checkSetattr(f.path(), in, false); errno != 0 {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		f.mu.Lock()
		w := f.w
		cur := f.info.Size
		f.mu.Unlock()
		h, isWrite := fh.(*writeHandle)
		switch {
		case isWrite:
			if errno := h.truncate(ctx, int64(size)); errno != 0 {
				return errno
			}
		case w != nil:
			if err := w.Truncate(ctx, int64(size)); err != nil {
				return f.root.errnoOf("truncate", f.path(), err)
			}
		case int64(size) != cur:
			f.root.o.Log.Error("truncate of a committed file is not supported; rewrite it instead",
				"path", f.path(), "size", size)
			return syscall.EOPNOTSUPP
		}
	}
	// Times are not stored (the commit records its own mtime); touch and
	// cp -p of a committed file keep working.
	return f.Getattr(ctx, fh, out)
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if errno := f.root.refuseWrite("open", f.path()); errno != 0 {
			return nil, 0, errno
		}
		// Without O_TRUNC the new version starts as a copy of the current
		// one (by reference: nothing is uploaded again).
		keep := flags&syscall.O_TRUNC == 0
		if errno := f.openForWrite(); errno != 0 {
			return nil, 0, errno
		}
		w, errno := f.startWrite(ctx, keep)
		if errno != 0 {
			return nil, 0, errno
		}
		start := startTruncated
		if keep {
			start = startKept
		}
		return &writeHandle{f: f, w: w, start: start, opener: processOf(callerPid(ctx))}, fuse.FOPEN_DIRECT_IO, 0
	}
	return f.openRead(ctx)
}

// Release forwards to the handle.
func (f *fileNode) Release(ctx context.Context, fh fusefs.FileHandle) syscall.Errno {
	if r, ok := fh.(fusefs.FileReleaser); ok {
		r.Release(ctx)
	}
	return 0
}

// startWrite begins a new version of the file: empty, or with keep one
// that starts from the current version (file opened for writing without
// O_TRUNC). One upload per file at a time: another gets EBUSY.
func (f *fileNode) startWrite(ctx context.Context, keep bool) (*segments.Writer, syscall.Errno) {
	r := f.root
	obj := f.object()
	if r.busy(f, obj) {
		r.o.Log.Error("file is already being written", "path", f.path())
		return nil, syscall.EBUSY
	}
	var w *segments.Writer
	if keep {
		var err error
		if w, err = r.c.Reopen(r.lifetime(), r.ctx, obj); err != nil {
			return nil, r.errnoOf("open", f.path(), err)
		}
	} else {
		w = r.c.Create(r.ctx, obj)
	}
	f.mu.Lock()
	r.mu.Lock()
	_, taken := r.writing[obj]
	if f.w != nil || taken {
		r.mu.Unlock()
		f.mu.Unlock()
		w.Abort(r.lifetime()) // another open got there first
		r.o.Log.Error("file is already being written", "path", f.path())
		return nil, syscall.EBUSY
	}
	f.w = w
	r.writing[obj] = f
	r.mu.Unlock()
	f.mu.Unlock()
	r.meta.Forget(obj)
	r.forgetListing(obj)
	return w, 0
}

// busy reports whether f (object obj) has an upload in progress.
func (r *Root) busy(f *fileNode, obj string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	_, taken := r.writing[obj]
	return f.w != nil || taken
}

// finishWrite detaches the upload w after its commit or abort.
func (f *fileNode) finishWrite(w *segments.Writer, committed bool) {
	r := f.root
	obj := f.object()
	f.mu.Lock()
	mine := f.w == w
	if mine {
		f.w = nil
		if committed {
			f.info.Size = w.Size()
			f.info.Meta = map[string]string{segments.MetaMtime: strconv.FormatInt(time.Now().Unix(), 10)}
		}
		f.infoAt = time.Time{} // re-read from Swift on the next getattr
	}
	f.mu.Unlock()
	if !mine {
		return
	}
	// The kernel may still believe in the size the writes gave the file:
	// after an abort it is wrong, and a reader would read past the end of
	// the version in Swift. Invalidate the attributes (not the pages:
	// this runs inside a FLUSH, and page invalidation could wait on it).
	_ = f.NotifyContent(-1, 0)
	r.mu.Lock()
	if r.writing[obj] == f {
		delete(r.writing, obj)
	}
	r.mu.Unlock()
	r.meta.Forget(obj)
	r.forgetListing(obj)
}

// abort abandons the upload w (nil: the one in progress, if any).
func (f *fileNode) abort(ctx context.Context, w *segments.Writer, why string) {
	if w == nil {
		f.mu.Lock()
		w = f.w
		f.mu.Unlock()
		if w == nil {
			return
		}
	}
	f.mu.Lock()
	active := f.w == w
	f.mu.Unlock()
	if why != "" && active {
		f.root.o.Log.Warn("upload abandoned", "path", f.path(), "why", why, "written", w.Size())
		f.root.stats.abandoned.Add(1)
	}
	w.Abort(ctx)
	f.finishWrite(w, false)
}

func (f *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr == XattrUpload {
		p, ok := f.progress()
		if !ok {
			return 0, fusefs.ENOATTR
		}
		return xattrValue(dest, uploadXattr(p))
	}
	key, ok := sumMeta(attr)
	if !ok {
		return 0, noXattr(attr)
	}
	if err := f.refreshFull(ctx); err != nil {
		return 0, f.root.errnoOf("getxattr", f.path(), err)
	}
	f.mu.Lock()
	v := f.versionLocked().Meta[key]
	f.mu.Unlock()
	if v == "" {
		return 0, fusefs.ENOATTR
	}
	return xattrValue(dest, v)
}

// xattrValue answers a get (or list) of an attribute whose value is v.
func xattrValue(dest []byte, v string) (uint32, syscall.Errno) {
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (f *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if err := f.refreshFull(ctx); err != nil {
		return 0, f.root.errnoOf("listxattr", f.path(), err)
	}
	var v string
	f.mu.Lock()
	for _, x := range sumXattrs {
		if f.versionLocked().Meta[x.meta] != "" {
			v += x.name + "\x00"
		}
	}
	f.mu.Unlock()
	if _, ok := f.progress(); ok {
		v += XattrUpload + "\x00"
	}
	return xattrValue(dest, v)
}

// uploading returns the file with an upload in progress for obj, if any.
func (r *Root) uploading(obj string) *fileNode {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writing[obj]
}

// uploadingIn lists the names of files being written directly in prefix.
func (r *Root) uploadingIn(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for obj := range r.writing {
		if rest, ok := strings.CutPrefix(obj, prefix); ok && !strings.Contains(rest, "/") {
			out = append(out, rest)
		}
	}
	return out
}

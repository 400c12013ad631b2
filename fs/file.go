package fs

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// XattrSHA256 is the extended attribute that exposes an image's SHA-256,
// computed while it was written.
const XattrSHA256 = "user.imagefs.sha256"

// fileNode is a file: one object.
type fileNode struct {
	fusefs.Inode
	root *Root
	rel  string

	mu     sync.Mutex // guards the fields below
	info   segments.Info
	infoAt time.Time
	w      *segments.Writer // upload in progress, nil if none
	// readVersion is the version key of the last read open: the kernel
	// may hold pages of it (FOPEN_KEEP_CACHE).
	readVersion string
}

var (
	_ fusefs.NodeGetattrer   = (*fileNode)(nil)
	_ fusefs.NodeSetattrer   = (*fileNode)(nil)
	_ fusefs.NodeOpener      = (*fileNode)(nil)
	_ fusefs.NodeGetxattrer  = (*fileNode)(nil)
	_ fusefs.NodeListxattrer = (*fileNode)(nil)
)

func (f *fileNode) object() string { return f.root.object(f.rel) }

func (f *fileNode) setInfo(in segments.Info) {
	f.mu.Lock()
	f.info, f.infoAt = in, time.Now()
	f.mu.Unlock()
}

// fillAttr reports the size and times the node knows now.
func (f *fileNode) fillAttr(a *fuse.Attr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a.Mode = syscall.S_IFREG | 0o644
	a.Nlink = 1
	a.Blksize = 1 << 20 // cp and dd size their buffers from this
	if f.w != nil {
		a.Size = uint64(f.w.Size())
		setAttrTime(a, time.Now())
	} else {
		a.Size = uint64(f.info.Size)
		setAttrTime(a, mtime(f.info))
	}
	a.Blocks = (a.Size + 511) / 512
	a.Owner = fuse.Owner{Uid: f.root.o.UID, Gid: f.root.o.GID}
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
	fresh := f.w != nil || time.Since(f.infoAt) < f.root.o.AttrTTL
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
		return f.root.errnoOf("getattr", f.rel, err)
	}
	f.fillAttr(&out.Attr)
	return 0
}

func (f *fileNode) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		f.mu.Lock()
		w := f.w
		cur := f.info.Size
		f.mu.Unlock()
		switch {
		case w != nil:
			if err := w.Truncate(ctx, int64(size)); err != nil {
				return f.root.errnoOf("truncate", f.rel, err)
			}
			if h, ok := fh.(*writeHandle); ok {
				h.touched()
			}
		case int64(size) != cur:
			f.root.o.Log.Error("truncate of a committed file is not supported; rewrite it instead",
				"path", f.rel, "size", size)
			return syscall.EOPNOTSUPP
		}
	}
	// Mode, owner and times are fixed by the mount; accept and ignore them
	// so that cp -p and touch work.
	return f.Getattr(ctx, fh, out)
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if write {
		if flags&syscall.O_TRUNC == 0 {
			f.root.o.Log.Error("opening an existing file for writing needs O_TRUNC: imagefs files are written once, sequentially",
				"path", f.rel, "flags", fmt.Sprintf("%#x", flags))
			return nil, 0, syscall.EOPNOTSUPP
		}
		h, errno := f.startWrite(ctx)
		return h, fuse.FOPEN_DIRECT_IO, errno
	}
	return f.openRead(ctx)
}

// startWrite begins a new version of the file.
func (f *fileNode) startWrite(ctx context.Context) (*writeHandle, syscall.Errno) {
	r := f.root
	obj := f.object()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.w != nil {
		r.o.Log.Error("file is already being written", "path", f.rel)
		return nil, syscall.EBUSY
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, busy := r.writing[obj]; busy {
		return nil, syscall.EBUSY
	}
	f.w = segments.NewWriter(r.ctx, r.o.Store, obj, segments.WriterOptions{
		Container:   r.o.Container,
		Pool:        r.o.Pool,
		MaxSegments: r.o.Limits.MaxManifestSegments,
		Log:         r.o.Log,
	})
	r.writing[obj] = f
	r.meta.Forget(obj)
	return &writeHandle{f: f, w: f.w}, 0
}

// finishWrite detaches the upload after commit or abort.
func (f *fileNode) finishWrite(w *segments.Writer, committed bool) {
	r := f.root
	obj := f.object()
	f.mu.Lock()
	if f.w == w {
		f.w = nil
		if committed {
			f.info.Size = w.Size()
			f.info.Meta = map[string]string{segments.MetaMtime: strconv.FormatInt(time.Now().Unix(), 10)}
		}
		f.infoAt = time.Time{} // re-read from Swift on the next getattr
	}
	f.mu.Unlock()
	r.mu.Lock()
	if r.writing[obj] == f {
		delete(r.writing, obj)
	}
	r.mu.Unlock()
	r.meta.Forget(obj)
}

// abort abandons the upload in progress, if any.
func (f *fileNode) abort(ctx context.Context, why string) {
	f.mu.Lock()
	w := f.w
	f.mu.Unlock()
	if w == nil {
		return
	}
	f.root.o.Log.Warn("upload abandoned", "path", f.rel, "why", why, "written", w.Size())
	w.Abort(ctx)
	f.finishWrite(w, false)
}

func (f *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr != XattrSHA256 {
		return 0, fusefs.ENOATTR
	}
	if err := f.refresh(ctx); err != nil {
		return 0, f.root.errnoOf("getxattr", f.rel, err)
	}
	f.mu.Lock()
	v := f.info.Meta[segments.MetaSHA256]
	f.mu.Unlock()
	if v == "" {
		return 0, fusefs.ENOATTR
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (f *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if err := f.refresh(ctx); err != nil {
		return 0, f.root.errnoOf("listxattr", f.rel, err)
	}
	f.mu.Lock()
	has := f.info.Meta[segments.MetaSHA256] != ""
	f.mu.Unlock()
	if !has {
		return 0, 0
	}
	v := XattrSHA256 + "\x00"
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
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

// killedBySignal reports whether the process that sent a request is
// exiting because of a signal (kill, Ctrl-C). The kernel closes a dying
// process's files, so its FLUSH looks like a normal close; committing then
// would publish a half-written image. /proc/<pid>/stat field 9 has
// PF_EXITING (0x4), field 52 the exit code (signal number in the low 7 bits).
func killedBySignal(pid uint32) bool {
	if pid == 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	fields := strings.Fields(s[i+1:]) // fields[0] is field 3 (state)
	if len(fields) < 50 {
		return false
	}
	flags, err1 := strconv.ParseUint(fields[6], 10, 64)
	code, err2 := strconv.ParseInt(fields[49], 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	const pfExiting = 0x4
	return flags&pfExiting != 0 && code&0x7f != 0
}

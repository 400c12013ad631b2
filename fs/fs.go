// Package fs is the FUSE face of imagefs: a go-fuse/v2 node tree that shows
// one Swift container (optionally below a prefix) as a directory tree.
//
// Names containing "/" make directories; directory marker objects ("dir/")
// are read and written. Files are written sequentially through a
// segments.Writer and committed when the file is closed: close(2) returns
// the real result of the commit, and until then other readers see the
// previous version. Reads go through a segments.Reader pinned to the
// version that was opened.
//
// The filesystem is a thin adapter: segments.Container decides how objects
// are stored, versioned, read and written; this package maps FUSE
// operations onto it (names, inodes, permissions, handles).
//
// Cancellation, one rule: a request's work runs under the mount's lifetime
// (Root.lifetime), never under the request's context. The kernel sends an
// INTERRUPT for any signal the caller gets, even one whose handler asks for
// restarted system calls (SIGCHLD, qemu's timer signals, Go's SIGURG), and
// a local disk never fails open, read, close or unlink with EINTR; nor may
// a half-done unlink, rename or commit be left behind. A fatal signal ends
// the caller's wait in the kernel anyway, and the work stops when the
// mount does. The one exception: a write that waits for upload memory
// waits under the request's context, so that a writer can be interrupted
// (EINTR) while Swift is slow.
//
// Errors become errno values only in errno.go.
package fs

import (
	"context"
	"log/slog"
	"path"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/segments"
)

// Options configure the filesystem.
type Options struct {
	// Objects is the container (below the mount's prefix) the mount
	// shows; it decides every storage rule and owns the versions.
	Objects *segments.Container
	Log     *slog.Logger
	// AttrTTL is how long metadata (HEAD answers) is trusted, in the
	// daemon and in the kernel.
	AttrTTL time.Duration
	// ListTTL is how long what a directory listing told (its names, and
	// the attributes of its entries) is trusted, in the daemon and in the
	// kernel (list.go); zero means AttrTTL.
	ListTTL time.Duration
	// UID, GID, FileMode and DirMode are the owner and permission bits
	// of every file and directory (see attr.go); zero modes mean
	// DefaultFileMode and DefaultDirMode.
	UID, GID          uint32
	FileMode, DirMode uint32

	// Blocks is the block cache reads go through; nil gives a small
	// memory-only one. The caller closes it after unmounting.
	Blocks *cache.Blocks
	// ReadAhead tunes the prefetch of each open file.
	ReadAhead cache.StreamOptions

	// UsageTTL is how long statfs (df) reuses the account's usage
	// figures (statfs.go); zero means DefaultUsageTTL.
	UsageTTL time.Duration
	// BootTraces turns boot traces on (trace.go): the first open of a
	// version on this host replays the version's trace from Swift, or
	// records one for TraceWindow (default DefaultTraceWindow).
	BootTraces  bool
	TraceWindow time.Duration
	// ReadOnly mounts read-only (the kernel's MS_RDONLY) and refuses
	// every change with EROFS.
	ReadOnly bool
	// Passthrough hands the kernel the disk cache's file of an image
	// that is whole in it, for read-only opens (passthrough.go), where
	// the kernel allows it.
	Passthrough bool

	pt *passthrough // shared by the roots of one mount
}

// DefaultUsageTTL is the default of Options.UsageTTL.
const DefaultUsageTTL = 30 * time.Second

// Root is the root directory of a mount. It owns the uploads in progress.
type Root struct {
	dirNode
	o      Options
	c      *segments.Container
	ctx    context.Context // mount lifetime: uploads run on it
	meta   *cache.Meta[string, segments.Info]
	blocks *cache.Blocks

	inos  *inodes
	dlos  dloCache
	lists listings
	use   *usageCache

	mu      sync.Mutex           // guards writing
	writing map[string]*fileNode // object name -> file with an upload in progress

	stats  stats    // stats.go
	traces traceSet // trace.go
}

// NewRoot returns the root node. ctx is the mount's lifetime: uploads
// stop when it is cancelled.
func NewRoot(ctx context.Context, o Options) *Root {
	o = o.withDefaults(ctx)
	return newRoot(ctx, o, newInodes())
}

// withDefaults fills in what o leaves unset.
func (o Options) withDefaults(ctx context.Context) Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.pt == nil {
		o.pt = &passthrough{}
	}
	if o.FileMode == 0 {
		o.FileMode = DefaultFileMode
	}
	if o.DirMode == 0 {
		o.DirMode = DefaultDirMode
	}
	if o.UsageTTL <= 0 {
		o.UsageTTL = DefaultUsageTTL
	}
	if o.TraceWindow <= 0 {
		o.TraceWindow = DefaultTraceWindow
	}
	if o.Blocks == nil {
		o.Blocks, _ = cache.New(cache.Options{Memory: 64 << 20}) // memory only: cannot fail
		context.AfterFunc(ctx, func() { o.Blocks.Close() })
	}
	return o
}

// newRoot is the root of container o.Objects, numbering its nodes in
// inos; o has its defaults.
func newRoot(ctx context.Context, o Options, inos *inodes) *Root {
	r := &Root{o: o, c: o.Objects, ctx: ctx, meta: cache.NewMeta[string, segments.Info](o.AttrTTL), inos: inos,
		dlos: dloCache{dirs: map[string]dloEntry{}}, lists: listings{at: map[string]time.Time{}}, writing: map[string]*fileNode{}, blocks: o.Blocks}
	r.use = newUsageCache(ctx, o, func(ctx context.Context) (segments.Usage, error) { return r.c.Usage(ctx) })
	r.dirNode = dirNode{root: r, rel: ""}
	return r
}

// MountOptions returns the go-fuse options imagefs mounts with.
func (r *Root) MountOptions(fsName string, debug bool) *fusefs.Options {
	return mountOptions(r.o, fsName, debug)
}

func mountOptions(o Options, fsName string, debug bool) *fusefs.Options {
	ttl := o.AttrTTL
	neg := time.Duration(0) // a file may appear from another host at any time
	fo := &fusefs.Options{
		MountOptions: fuse.MountOptions{
			FsName: fsName,
			Name:   "imagefs",
			// Large WRITEs and READs (max_write and max_read) halve the
			// CPU per byte.
			MaxWrite: 1 << 20,
			// Async READs (go-fuse's default) let the kernel's readahead
			// and parallel direct I/O keep many READs in flight; this caps
			// them. The kernel's readahead window itself is raised after
			// the mount (SetKernelReadahead).
			MaxBackground: 128,
			DisableSplice: true, // splice of 1 MiB + header overflows the pipe
			// Open(O_TRUNC) arrives as one request, so an overwrite is one
			// new upload and the old version lives until the commit.
			// ASYNC_DIO: a large O_DIRECT read (qemu cache=none) is sent
			// as parallel READs rather than one after the other.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_ASYNC_DIO,
			Options:           o.mountFlags(),
			Debug:             debug,
			Logger:            slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
		},
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &neg,
		UID:             o.UID,
		GID:             o.GID,
	}
	if o.ReadOnly {
		fo.MountOptions.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY
	}
	return fo
}

// mountFlags are the mount's options beyond go-fuse's own.
func (o Options) mountFlags() []string {
	// The kernel checks the owner and modes of attr.go for every caller,
	// so that other users (with allow_other) may read but not write,
	// create, rename or delete.
	flags := []string{"default_permissions"}
	if o.ReadOnly {
		flags = append(flags, "ro") // for fusermount; mount(2) gets MS_RDONLY
	}
	return flags
}

// refuseWrite is EROFS on a read-only mount: the kernel refuses changes
// before they get here, this is the daemon's own guard.
func (r *Root) refuseWrite(op, rel string) syscall.Errno {
	if !r.o.ReadOnly {
		return 0
	}
	r.o.Log.Debug("read-only mount", "op", op, "path", rel)
	return syscall.EROFS
}

// Abort abandons every upload in progress (shutdown after the grace time).
func (r *Root) Abort(ctx context.Context) int {
	r.mu.Lock()
	files := make([]*fileNode, 0, len(r.writing))
	for _, f := range r.writing {
		files = append(files, f)
	}
	r.mu.Unlock()
	for _, f := range files {
		f.abort(ctx, nil, "shutdown")
	}
	return len(files)
}

// Uploads is the number of files being written.
func (r *Root) Uploads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writing)
}

// lifetime is the context a request's work runs under: the mount's (see
// the package doc).
func (r *Root) lifetime() context.Context { return r.ctx }

// object is the object name of a path relative to the mount.
func (r *Root) object(rel string) string { return r.c.Prefix() + rel }

// head returns an object's attributes through the metadata cache: a
// listing's entry will do, but for a zero-byte object (it may be a DLO
// manifest, whose size only a HEAD tells).
//
// A HEAD is short: a signal that interrupts the request (qemu-img gets
// some while it opens its images) must not fail the lookup with EINTR, so
// it runs under the mount's lifetime, not ctx.
func (r *Root) head(ctx context.Context, name string) (segments.Info, error) {
	return r.headIf(r.lifetime(), name, func(in segments.Info) bool { return !in.Listed() || in.Size > 0 })
}

// headFull is head for what only a HEAD tells (metadata: digests, mtime;
// SLO, DLO): a listing's entry will not do.
func (r *Root) headFull(ctx context.Context, name string) (segments.Info, error) {
	return r.headIf(r.lifetime(), name, notListed)
}

func notListed(in segments.Info) bool { return !in.Listed() }

// headIf HEADs name under ctx unless the cache has an answer enough
// calls good enough.
func (r *Root) headIf(ctx context.Context, name string, enough func(segments.Info) bool) (segments.Info, error) {
	if in, exists, found := r.meta.Get(name); found {
		if !exists {
			return segments.Info{}, segments.ErrNotFound
		}
		if enough(in) {
			return in, nil
		}
	}
	asked := time.Now()
	in, err := r.c.Head(ctx, name)
	switch {
	case err == nil:
		r.meta.PutAt(name, in, true, asked, r.o.AttrTTL)
	case isNotFound(err):
		r.meta.PutAt(name, segments.Info{}, false, asked, r.o.AttrTTL)
	}
	return in, err
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func baseName(rel string) string { return path.Base(rel) }

func setAttrTime(a *fuse.Attr, t time.Time) {
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	a.SetTimes(&t, &t, &t)
}

// errnoOf is toErrno with the root's logger.
func (r *Root) errnoOf(op, rel string, err error) syscall.Errno {
	return toErrno(r.o.Log, op, rel, err)
}

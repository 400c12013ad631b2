package fs

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/segments"
)

// An account mount shows a whole Swift account: its containers are the
// directories at the top (segment containers and imagefs' own state
// hidden, see segments.Hidden), and each of them is a Root, the tree a
// mount of that container alone would show, with the same rules for
// reads, writes, renames and removals. A Glance multi-tenant store (a
// container glance_<uuid> per image) is one tree so.
//
// The top level holds containers only. mkdir there creates a container
// only when the mount allows it (AccountOptions.CreateContainers);
// otherwise it fails with EPERM and a log line, as do creating a file
// there, rmdir of a container (a container is deleted with Swift's
// tools, never by rm -r) and renaming one. A rename between containers
// is EXDEV (mv copies then). A container's Root is made when the
// container is first looked up, with its segments.Container from the
// segments.Account, and lives as long as the mount (a persistent node):
// its uploads, caches and versions stay with it.
//
// Containers that appear are seen at once by a listing (each readdir of
// the top lists the account) and by a lookup within AttrTTL: a
// container's existence, or its absence, is trusted that long.
type Account struct {
	fusefs.Inode
	o      Options // of every container (Objects unset), defaults filled in
	create bool
	acct   *segments.Account
	ctx    context.Context // mount lifetime
	inos   *inodes
	exists *cache.Meta[string, bool] // container -> it exists (HEAD or listing)

	stats stats       // the FUSE traffic of the whole mount
	use   *usageCache // statfs: the account's figures

	mu    sync.Mutex       // guards roots
	roots map[string]*Root // by container, once looked up
}

// AccountOptions configure an account mount.
type AccountOptions struct {
	// Options are those of every container's tree; Objects is not used
	// (the Account gives each container's).
	Options
	Account *segments.Account
	// CreateContainers lets mkdir at the top create a container.
	CreateContainers bool
}

var (
	_ fusefs.NodeLookuper   = (*Account)(nil)
	_ fusefs.NodeReaddirer  = (*Account)(nil)
	_ fusefs.NodeGetattrer  = (*Account)(nil)
	_ fusefs.NodeSetattrer  = (*Account)(nil)
	_ fusefs.NodeMkdirer    = (*Account)(nil)
	_ fusefs.NodeRmdirer    = (*Account)(nil)
	_ fusefs.NodeCreater    = (*Account)(nil)
	_ fusefs.NodeRenamer    = (*Account)(nil)
	_ fusefs.NodeStatfser   = (*Account)(nil)
	_ fusefs.NodeGetxattrer = (*Account)(nil)
	_ fusefs.NodeSetxattrer = (*Account)(nil)
)

// NewAccount returns the root node of an account mount. ctx is the
// mount's lifetime: uploads stop when it is cancelled.
func NewAccount(ctx context.Context, o AccountOptions) *Account {
	opts := o.Options.withDefaults(ctx)
	opts.Objects = nil
	a := &Account{o: opts, create: o.CreateContainers, acct: o.Account, ctx: ctx, inos: newInodes(),
		exists: cache.NewMeta[string, bool](opts.AttrTTL), roots: map[string]*Root{}}
	a.use = newUsageCache(ctx, opts, a.acct.Usage)
	return a
}

// MountOptions returns the go-fuse options imagefs mounts with.
func (a *Account) MountOptions(fsName string, debug bool) *fusefs.Options {
	return mountOptions(a.o, fsName, debug)
}

// Abort abandons every upload in progress, in every container
// (shutdown after the grace time).
func (a *Account) Abort(ctx context.Context) int {
	n := 0
	for _, r := range a.containerRoots() {
		n += r.Abort(ctx)
	}
	return n
}

// Uploads is the number of files being written, in every container.
func (a *Account) Uploads() int {
	n := 0
	for _, r := range a.containerRoots() {
		n += r.Uploads()
	}
	return n
}

func (a *Account) containerRoots() []*Root {
	a.mu.Lock()
	defer a.mu.Unlock()
	rs := make([]*Root, 0, len(a.roots))
	for _, r := range a.roots {
		rs = append(rs, r)
	}
	return rs
}

// root returns the Root of container name, making it when first asked.
func (a *Account) root(name string) *Root {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.roots[name]
	if !ok {
		o := a.o
		o.Objects = a.acct.Container(name)
		r = newRoot(a.ctx, o, a.inos.within(name))
		a.roots[name] = r
	}
	return r
}

// containerExists reports whether container name exists, through the
// attribute cache.
func (a *Account) containerExists(name string) (bool, error) {
	if ok, _, found := a.exists.Get(name); found {
		return ok, nil
	}
	// As a HEAD in a container: under the mount's lifetime.
	ok, err := a.acct.Exists(a.ctx, name)
	if err == nil {
		a.exists.Put(name, ok)
	}
	return ok, err
}

// node is the (persistent) node of container name's tree.
func (a *Account) node(ctx context.Context, name string, out *fuse.EntryOut) *fusefs.Inode {
	r := a.root(name)
	r.dirAttr(&out.Attr)
	// A node already made is returned as it is (go-fuse keeps the
	// embedder's Inode).
	return a.NewPersistentInode(ctx, r, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: a.inos.get(name, true)})
}

func (a *Account) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if segments.Hidden(name) {
		return nil, syscall.ENOENT
	}
	ok, err := a.containerExists(name)
	if err != nil {
		return nil, toErrno(a.o.Log, "lookup", name, err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	return a.node(ctx, name, out), 0
}

func (a *Account) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	var entries []fuse.DirEntry
	err := a.acct.List(a.ctx, func(name string) error {
		a.exists.Put(name, true)
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: a.inos.get(name, true)})
		return nil
	})
	if err != nil {
		return nil, toErrno(a.o.Log, "readdir", "", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	return fusefs.NewListDirStream(entries), 0
}

func (a *Account) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | a.o.DirMode
	out.Nlink = 2
	out.Owner = fuse.Owner{Uid: a.o.UID, Gid: a.o.GID}
	return 0
}

func (a *Account) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := checkSetattr(&a.o, "/", in, true); errno != 0 {
		return errno
	}
	return a.Getattr(ctx, fh, out)
}

func (a *Account) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if segments.Hidden(name) {
		a.o.Log.Warn("mkdir refused: the name is kept for segment containers and imagefs' own state", "path", name)
		return nil, syscall.EPERM
	}
	if !a.create {
		a.o.Log.Warn("mkdir refused: a directory at the top of an account mount is a container; create it with Swift's tools (swift post NAME) or mount with --create-container",
			"path", name)
		return nil, syscall.EPERM
	}
	ok, err := a.containerExists(name)
	if err != nil {
		return nil, toErrno(a.o.Log, "mkdir", name, err)
	}
	if ok {
		return nil, syscall.EEXIST
	}
	if err := a.acct.Create(a.ctx, name); err != nil {
		return nil, toErrno(a.o.Log, "mkdir", name, err)
	}
	a.exists.Put(name, true)
	a.o.Log.Info("container created", "container", name)
	return a.node(ctx, name, out), 0
}

func (a *Account) Rmdir(ctx context.Context, name string) syscall.Errno {
	if ok, err := a.containerExists(name); err != nil {
		return toErrno(a.o.Log, "rmdir", name, err)
	} else if !ok || segments.Hidden(name) {
		return syscall.ENOENT
	}
	a.o.Log.Warn("rmdir refused: a container is never deleted through the mount; delete it with Swift's tools (swift delete NAME)", "path", name)
	return syscall.EPERM
}

func (a *Account) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	a.o.Log.Warn("create refused: the top of an account mount holds containers only; write files inside one", "path", name)
	return nil, nil, 0, syscall.EPERM
}

func (a *Account) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	a.o.Log.Warn("rename refused: containers cannot be renamed", "path", name, "to", newName)
	return syscall.EPERM
}

func (a *Account) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return a.use.statfs(out)
}

func (a *Account) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, noXattr(attr)
}

func (a *Account) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

// Mount mounts the account on dir, as Root.Mount does.
func (a *Account) Mount(dir string, opts *fusefs.Options, lat fuse.LatencyMap) (*fuse.Server, error) {
	return mount(dir, a, &a.stats, opts, lat, a.o)
}

// Stats returns the mount's counters: the FUSE traffic of the whole
// mount, the commits of every container.
func (a *Account) Stats() Stats {
	s := Stats{ReadBytes: a.stats.readBytes.Load(), WrittenBytes: a.stats.writtenBytes.Load(), Passthroughs: a.o.pt.opens.Load(),
		PassthroughNewInodes: a.o.pt.detached.Load()}
	for _, r := range a.containerRoots() {
		rs := r.Stats()
		s.Commits += rs.Commits
		s.CommitFailures += rs.CommitFailures
		s.Abandoned += rs.Abandoned
		s.TracesRecorded += rs.TracesRecorded
		s.TracesReplayed += rs.TracesReplayed
		s.TraceBytes += rs.TraceBytes
	}
	return s
}

// Warm warms container/path (see Root.Warm).
func (a *Account) Warm(ctx context.Context, rel string, o WarmOptions) (WarmProgress, error) {
	rel = strings.Trim(path.Clean("/"+rel), "/")
	name, rest, _ := strings.Cut(rel, "/")
	if name == "" || rest == "" || segments.Hidden(name) {
		return WarmProgress{Path: rel}, fmt.Errorf("%q is not a file of a container: name the files to warm as CONTAINER/PATH", rel)
	}
	switch ok, err := a.containerExists(name); {
	case err != nil:
		return WarmProgress{Path: rel}, fmt.Errorf("container %s: %w", name, err)
	case !ok:
		return WarmProgress{Path: rel}, fmt.Errorf("%s: no such container", name)
	}
	p, err := a.root(name).Warm(ctx, rest, o)
	p.Path = rel
	return p, err
}

// UploadList lists the files being written in every container, by path
// (container/path).
func (a *Account) UploadList() []Upload {
	var out []Upload
	for name, r := range a.rootsByName() {
		for _, u := range r.UploadList() {
			u.Path = name + "/" + u.Path
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func (a *Account) rootsByName() map[string]*Root {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]*Root, len(a.roots))
	for n, r := range a.roots {
		m[n] = r
	}
	return m
}

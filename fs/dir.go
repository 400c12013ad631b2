package fs

import (
	"context"
	"errors"
	"strings"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// dirNode is a directory: every object name under rel + "/".
type dirNode struct {
	fusefs.Inode
	root *Root
	rel  string // path relative to the mount, "" for the root
}

var (
	_ fusefs.NodeLookuper  = (*dirNode)(nil)
	_ fusefs.NodeGetattrer = (*dirNode)(nil)
	_ fusefs.NodeMkdirer   = (*dirNode)(nil)
	_ fusefs.NodeRmdirer   = (*dirNode)(nil)
	_ fusefs.NodeUnlinker  = (*dirNode)(nil)
	_ fusefs.NodeCreater   = (*dirNode)(nil)
	_ fusefs.NodeRenamer   = (*dirNode)(nil)
	_ fusefs.NodeStatfser  = (*dirNode)(nil)
)

const dirMarkerType = "application/directory"

// listPrefix is the object prefix of the directory's entries.
func (d *dirNode) listPrefix() string {
	if d.rel == "" {
		return d.root.c.Prefix()
	}
	return d.root.object(d.rel) + "/"
}

func isNotFound(err error) bool { return errors.Is(err, segments.ErrNotFound) }

// errStop ends a listing early.
var errStop = errors.New("stop")

// dirExists reports whether any object lives under rel + "/" (a marker
// object or files).
func (d *dirNode) dirExists(ctx context.Context, rel string) (bool, error) {
	found := false
	err := d.root.c.List(ctx, d.root.object(rel)+"/", '/', func(segments.Info) error {
		found = true
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	return found, nil
}

func (d *dirNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.root.dirAttr(&out.Attr)
	return 0
}

// dirAttr fills the attributes every directory has.
func (r *Root) dirAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFDIR | r.o.DirMode
	a.Nlink = 2
	r.owner(a)
}

// newFile makes the node of the file rel (the kernel's dedup on the inode
// number returns the node it already knows, if any).
func (d *dirNode) newFile(ctx context.Context, f *fileNode) *fusefs.Inode {
	return d.NewInode(ctx, f, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: d.root.inos.get(f.path(), false)})
}

// newDir makes the node of the directory rel.
func (d *dirNode) newDir(ctx context.Context, rel string) *fusefs.Inode {
	return d.NewInode(ctx, &dirNode{root: d.root, rel: rel}, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.root.inos.get(rel, true)})
}

// OnForget drops the directory's inode number once the kernel forgot it.
func (d *dirNode) OnForget() { d.root.inos.drop(d.rel, true, d.StableAttr().Ino) }

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	work := d.root.lifetime() // see the package doc
	rel := join(d.rel, name)
	r := d.root
	if r.hidden(rel) {
		return nil, syscall.ENOENT
	}
	if f := r.uploading(r.object(rel)); f != nil {
		f.fillAttr(&out.Attr)
		return d.newFile(ctx, f), 0
	}
	in, err := r.head(work, r.object(rel))
	if err == nil && !isDirMarker(in) {
		if part, perr := r.isPart(work, in.Name); perr != nil {
			return nil, r.errnoOf("lookup", rel, perr)
		} else if part {
			return nil, syscall.ENOENT // a part of another image
		}
		return d.lookupFile(ctx, name, in, &out.Attr), 0
	}
	if err != nil && !isNotFound(err) {
		return nil, r.errnoOf("lookup", rel, err)
	}
	ok, err := d.dirExists(work, rel)
	if err != nil {
		return nil, r.errnoOf("lookup", rel, err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	r.dirAttr(&out.Attr)
	return d.newDir(ctx, rel), 0
}

// lookupFile answers a lookup of the committed file name, of which Swift
// says in: the node the kernel knows, or a new one when that node passes
// through another version (passthrough.go).
func (d *dirNode) lookupFile(ctx context.Context, name string, in segments.Info, a *fuse.Attr) *fusefs.Inode {
	r := d.root
	rel := join(d.rel, name)
	if old := d.fileChild(name); old != nil && old.passingThrough() {
		if in.Listed() {
			// A listing's ETag of a large object is not its HEAD's (the
			// one opens record): compare like with like.
			if full, err := r.headFull(r.lifetime(), r.object(rel)); err == nil {
				in = full
			}
		}
		if old.passesThroughOther(in) {
			old.detach("a newer version")
		}
	}
	f := newFileNode(r, rel)
	f.setInfo(in)
	ch := d.newFile(ctx, f)
	if known, ok := ch.Operations().(*fileNode); ok && known != f {
		known.setInfo(in)
		f = known
	}
	f.fillAttr(a)
	return ch
}

func isDirMarker(in segments.Info) bool {
	return strings.HasSuffix(in.Name, "/") || (in.Size == 0 && in.ContentType == dirMarkerType)
}

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	work := d.root.lifetime() // see the package doc
	rel := join(d.rel, name)
	r := d.root
	if errno := r.refuseWrite("mkdir", rel); errno != 0 {
		return nil, errno
	}
	if _, err := r.head(work, r.object(rel)); err == nil {
		return nil, syscall.EEXIST
	}
	if errno := r.mayCreate(work, "mkdir", rel); errno != 0 {
		return nil, errno
	}
	if ok, err := d.dirExists(work, rel); err != nil {
		return nil, r.errnoOf("mkdir", rel, err)
	} else if ok {
		return nil, syscall.EEXIST
	}
	marker := r.object(rel) + "/"
	defer r.forgetListing(r.object(rel))
	if err := r.c.PutMarker(work, marker, dirMarkerType); err != nil {
		return nil, r.errnoOf("mkdir", rel, err)
	}
	r.dirAttr(&out.Attr)
	return d.newDir(ctx, rel), 0
}

func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	work := d.root.lifetime() // see the package doc
	rel := join(d.rel, name)
	r := d.root
	if errno := r.refuseWrite("rmdir", rel); errno != 0 {
		return errno
	}
	prefix := r.object(rel) + "/"
	marker, other := false, false
	err := r.c.List(work, prefix, '/', func(in segments.Info) error {
		if in.Name == prefix && !in.Subdir {
			marker = true
			return nil
		}
		other = true
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return r.errnoOf("rmdir", rel, err)
	}
	if other || len(r.uploadingIn(prefix)) > 0 {
		return syscall.ENOTEMPTY
	}
	if !marker {
		return syscall.ENOENT
	}
	defer r.forgetListing(r.object(rel))
	if err := r.c.DeleteMarker(work, prefix); err != nil {
		return r.errnoOf("rmdir", rel, err)
	}
	return 0
}

func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	rel := join(d.rel, name)
	r := d.root
	if errno := r.refuseWrite("unlink", rel); errno != 0 {
		return errno
	}
	obj := r.object(rel)
	if f := r.uploading(obj); f != nil {
		// Removing a file that is still being written abandons the upload.
		f.abort(r.lifetime(), nil, "unlinked while being written")
		return 0
	}
	defer r.meta.Forget(obj)
	defer r.forgetDLOs(obj)
	defer r.forgetListing(obj)
	// The objects of the version go at a later reap, so this is two small
	// requests.
	ctx = r.lifetime()
	if err := r.c.Remove(ctx, obj); err != nil {
		return r.errnoOf("unlink", rel, err)
	}
	if f := d.fileChild(name); f != nil {
		// A file created under this name later is another node.
		r.inos.drop(rel, false, f.StableAttr().Ino)
	}
	return 0
}

// fileChild is the node of a file the kernel knows, if any.
func (d *dirNode) fileChild(name string) *fileNode {
	if ch := d.GetChild(name); ch != nil {
		f, _ := ch.Operations().(*fileNode)
		return f
	}
	return nil
}

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	work := d.root.lifetime() // see the package doc
	rel := join(d.rel, name)
	r := d.root
	if errno := r.refuseWrite("create", rel); errno != 0 {
		return nil, nil, 0, errno
	}
	// If the kernel still knows a file of that name, the upload must hang
	// off that node: go-fuse keeps one Inode per inode number.
	var f *fileNode
	ch := d.GetChild(name)
	if ch != nil {
		f, _ = ch.Operations().(*fileNode)
	}
	if f != nil && f.openForWrite() != 0 {
		f = nil // it passes through: the new file is a new node
	}
	if f == nil {
		if errno := r.mayCreate(work, "create", rel); errno != 0 {
			return nil, nil, 0, errno
		}
		f = newFileNode(r, rel)
		ch = d.newFile(ctx, f)
		if got, ok := ch.Operations().(*fileNode); ok {
			f = got
		}
	}
	w, errno := f.startWrite(ctx, false)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	h := &writeHandle{f: f, w: w, start: startCreated, opener: processOf(callerPid(ctx))}
	f.fillAttr(&out.Attr)
	return ch, h, fuse.FOPEN_DIRECT_IO, 0
}

func (d *dirNode) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	r := d.root
	if errno := r.refuseWrite("rename", join(d.rel, name)); errno != 0 {
		return errno
	}
	np, ok := newParent.(*dirNode)
	if !ok {
		if rp, isRoot := newParent.(*Root); isRoot {
			np = &rp.dirNode
		} else {
			return syscall.EXDEV
		}
	}
	if np.root != r {
		return syscall.EXDEV // another container (an account mount)
	}
	src, dst := join(d.rel, name), join(np.rel, newName)
	if flags != 0 {
		return syscall.EINVAL // RENAME_NOREPLACE/EXCHANGE are not offered
	}
	srcObj, dstObj := r.object(src), r.object(dst)
	if r.uploading(srcObj) != nil || r.uploading(dstObj) != nil {
		return syscall.EBUSY
	}
	if errno := r.mayCreate(r.lifetime(), "rename", dst); errno != 0 {
		return errno
	}
	ctx = r.lifetime()
	in, err := r.c.Head(ctx, srcObj)
	if isNotFound(err) {
		// Directories are prefixes: renaming one means copying every
		// object below it. mv falls back to copy and delete on EXDEV.
		if ok, derr := d.dirExists(ctx, src); derr == nil && ok {
			return syscall.EXDEV
		}
		return syscall.ENOENT
	}
	if err != nil {
		return r.errnoOf("rename", src, err)
	}
	defer r.meta.Forget(srcObj)
	defer r.meta.Forget(dstObj)
	defer r.forgetDLOs(srcObj)
	defer r.forgetDLOs(dstObj)
	defer r.forgetListing(srcObj)
	defer r.forgetListing(dstObj)
	if err := r.c.Rename(ctx, in, dstObj); err != nil {
		return r.errnoOf("rename", src, err)
	}
	// go-fuse moves the node to the new name when this returns; from now
	// on it stands for the object of that name (an open handle keeps the
	// version it opened).
	if f := d.fileChild(name); f != nil {
		f.setPath(dst)
	}
	r.inos.move(src, dst)
	return 0
}

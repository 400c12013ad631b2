package fs

import (
	"context"
	"fmt"
	"strings"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Ownership, modes and extended attributes.
//
// Swift has no owners or modes, so the mount gives every file and directory
// the same ones (Options.UID, GID, FileMode, DirMode) and mounts with
// default_permissions: the kernel enforces them, for every local user,
// before a request reaches imagefs. With the defaults (root, 0644 and
// 0755) other users may read and list but never write, create, rename or
// delete. chmod and chown to anything else fail with EPERM and a log line:
// they cannot be stored, and succeeding without storing them would let a
// tool believe a file is private (or writable) when it is not. libvirt's
// dynamic_ownership treats that EPERM as "not supported here" and goes on.
//
// Extended attributes: the digests (user.imagefs.sha256, .md5, .sha512)
// and, while a file is being written, user.imagefs.upload (its upload's
// state) are read-only (EPERM on a set or remove); any other name cannot
// be stored (ENOTSUP on a set or remove). A get of another user.* name is
// ENODATA (not set); of any other namespace
// (trusted.*, security.*, system.*) ENOTSUP, the answer of a filesystem
// without them: libvirt's remember_owner then remembers nothing and goes
// on, where ENODATA would make it try to set trusted.libvirt.security.*
// and fail the VM's start.

// DefaultFileMode and DefaultDirMode are the modes files and directories
// show unless the mount says otherwise.
const (
	DefaultFileMode = 0o644
	DefaultDirMode  = 0o755
)

// owner fills the mount's ownership into a.
func (r *Root) owner(a *fuse.Attr) {
	a.Owner = fuse.Owner{Uid: r.o.UID, Gid: r.o.GID}
}

// checkSetattr refuses a chmod or chown that would change what the mount
// shows (a no-op one, as cp -p and rsync send, succeeds).
func (r *Root) checkSetattr(rel string, in *fuse.SetAttrIn, dir bool) syscall.Errno {
	return checkSetattr(&r.o, rel, in, dir)
}

func checkSetattr(o *Options, rel string, in *fuse.SetAttrIn, dir bool) syscall.Errno {
	mode, modeFlag := o.FileMode, "--file-mode"
	if dir {
		mode, modeFlag = o.DirMode, "--dir-mode"
	}
	if m, ok := in.GetMode(); ok && m&0o7777 != mode {
		o.Log.Warn("chmod refused: modes are set for the whole mount ("+modeFlag+"); Swift cannot store them per file",
			"path", rel, "mode", fmt.Sprintf("%04o", m&0o7777), "mount_mode", fmt.Sprintf("%04o", mode))
		return syscall.EPERM
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if (uok && uid != o.UID) || (gok && gid != o.GID) {
		o.Log.Warn("chown refused: ownership is set for the whole mount (--uid, --gid); Swift cannot store it per file. "+
			"For a VM, use the image read-only (a <readonly/> disk, or the backing file of a local qcow2 overlay)",
			"path", rel, "uid", optID(uid, uok), "gid", optID(gid, gok), "mount_uid", o.UID, "mount_gid", o.GID)
		return syscall.EPERM
	}
	return 0
}

func optID(v uint32, ok bool) any {
	if !ok {
		return "unchanged"
	}
	return v
}

// noXattr answers a get of an attribute that is not there.
func noXattr(attr string) syscall.Errno {
	if strings.HasPrefix(attr, "user.") {
		return fusefs.ENOATTR
	}
	return syscall.ENOTSUP
}

var _ fusefs.NodeGetxattrer = (*dirNode)(nil)

// Getxattr of a directory: it has none.
func (d *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, noXattr(attr)
}

// setxattr answers a set or remove of an extended attribute.
func (r *Root) setxattr(rel, attr string) syscall.Errno {
	if _, ok := sumMeta(attr); ok || attr == XattrUpload {
		return syscall.EPERM // computed by imagefs, not settable
	}
	r.o.Log.Debug("extended attributes cannot be stored", "path", rel, "attr", attr)
	return syscall.ENOTSUP
}

var (
	_ fusefs.NodeSetxattrer    = (*fileNode)(nil)
	_ fusefs.NodeRemovexattrer = (*fileNode)(nil)
	_ fusefs.NodeSetxattrer    = (*dirNode)(nil)
	_ fusefs.NodeRemovexattrer = (*dirNode)(nil)
	_ fusefs.NodeSetattrer     = (*dirNode)(nil)
)

func (f *fileNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return f.root.setxattr(f.path(), attr)
}

func (f *fileNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return f.root.setxattr(f.path(), attr)
}

func (d *dirNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return d.root.setxattr(d.rel, attr)
}

func (d *dirNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return d.root.setxattr(d.rel, attr)
}

// Setattr of a directory: only no-op chmod and chown succeed; times are
// not stored (a directory is a name prefix in Swift).
func (d *dirNode) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := d.root.refuseWrite("setattr", d.rel); errno != 0 {
		return errno
	}
	if errno := d.root.checkSetattr(d.rel, in, true); errno != 0 {
		return errno
	}
	return d.Getattr(ctx, fh, out)
}

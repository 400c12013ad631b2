package fs_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
)

// asNobody runs a shell command as uid/gid 65534 and returns its output
// and error.
func asNobody(t *testing.T, script string) (string, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script).CombinedOutput()
	return string(out), err
}

// TestOtherUsersReadOnly: with allow_other and the default owner and modes,
// another local user may list and read but not write, create, rename or
// delete; the kernel refuses before anything reaches Swift.
func TestOtherUsersReadOnly(t *testing.T) {
	e := mountWith(t, mib, func(o *fs.Options, mo *fusefs.Options) { mo.AllowOther = true })
	e.put(t, "victim.img", []byte("original"), nil)
	e.put(t, "d/other.img", []byte("x"), nil)
	if err := os.Chmod(filepath.Dir(e.dir), 0o755); err != nil { // t.TempDir is 0700
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(filepath.Dir(e.dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	v := filepath.Join(e.dir, "victim.img")
	if out, err := asNobody(t, "cat "+v+" && ls "+e.dir); err != nil || !strings.Contains(out, "original") {
		t.Fatalf("read as another user: %v: %s", err, out)
	}
	for _, script := range []string{
		"echo pwned > " + v,
		"echo new > " + filepath.Join(e.dir, "new.img"),
		"rm -f " + v,
		"mv " + v + " " + filepath.Join(e.dir, "moved.img"),
		"mkdir " + filepath.Join(e.dir, "newdir"),
		"rm -f " + filepath.Join(e.dir, "d/other.img"),
		"truncate -s 0 " + v,
	} {
		out, err := asNobody(t, script)
		if err == nil || !strings.Contains(out, "ermission denied") {
			t.Errorf("%q as another user: %v: %s (want permission denied)", script, err, out)
		}
	}
	data, err := e.st.Get(context.Background(), "c", "victim.img", 0, -1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(data)
	if b.String() != "original" {
		t.Errorf("victim.img in Swift is %q", b.String())
	}
	if n := e.st.Names("c"); strings.Join(n, " ") != "d/other.img victim.img" {
		t.Errorf("container holds %v", n)
	}
	st, err := os.Stat(v)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode().Perm() != 0o644 || sys.Uid != 0 || sys.Gid != 0 {
		t.Errorf("victim.img: mode %v owner %d:%d, want 0644 root:root", st.Mode(), sys.Uid, sys.Gid)
	}
}

// TestModesFromOptions: owner and modes come from the options; a group
// given write permission may write.
func TestModesFromOptions(t *testing.T) {
	e := mountWith(t, mib, func(o *fs.Options, mo *fusefs.Options) {
		mo.AllowOther = true
		o.GID, o.FileMode, o.DirMode = 65534, 0o664, 0o775
	})
	if err := os.Chmod(filepath.Dir(e.dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(filepath.Dir(e.dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(e.dir, "shared.img")
	if out, err := asNobody(t, "echo from-group > "+p); err != nil {
		t.Fatalf("write as a member of the mount's group: %v: %s", err, out)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o664 || st.Sys().(*syscall.Stat_t).Gid != 65534 {
		t.Errorf("mode %v gid %d", st.Mode(), st.Sys().(*syscall.Stat_t).Gid)
	}
	if dst, _ := os.Stat(e.dir); dst.Mode().Perm() != 0o775 {
		t.Errorf("root dir mode %v", dst.Mode())
	}
}

// TestChmodChownXattr: chmod and chown that would change anything fail
// with EPERM (no-op ones succeed, as cp -p sends them); extended
// attributes cannot be set (ENOTSUP), the digest ones are read-only (EPERM),
// a missing user.* one reads as ENODATA, one of another namespace as
// ENOTSUP (libvirt's remember_owner then gives up quietly).
func TestChmodChownXattr(t *testing.T) {
	e := mount(t, mib)
	p := filepath.Join(e.dir, "f.img")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(e.dir, "dir")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{p, d} {
		if err := os.Chmod(path, 0o600); !errors.Is(err, syscall.EPERM) {
			t.Errorf("chmod 0600 %s: %v, want EPERM", path, err)
		}
		if err := os.Chown(path, 64055, 64055); !errors.Is(err, syscall.EPERM) {
			t.Errorf("chown %s: %v, want EPERM", path, err)
		}
		if err := os.Chown(path, 0, 0); err != nil {
			t.Errorf("no-op chown %s: %v", path, err)
		}
		if err := syscall.Setxattr(path, "trusted.libvirt.security.dac", []byte("+0:+0"), 0); !errors.Is(err, syscall.ENOTSUP) {
			t.Errorf("setxattr %s: %v, want ENOTSUP", path, err)
		}
		if err := syscall.Setxattr(path, "user.x", []byte("1"), 0); !errors.Is(err, syscall.ENOTSUP) {
			t.Errorf("setxattr user.x %s: %v, want ENOTSUP", path, err)
		}
		if err := syscall.Removexattr(path, "user.x"); !errors.Is(err, syscall.ENOTSUP) {
			t.Errorf("removexattr %s: %v, want ENOTSUP", path, err)
		}
		buf := make([]byte, 64)
		if _, err := syscall.Getxattr(path, "trusted.libvirt.security.ref_dac", buf); !errors.Is(err, syscall.ENOTSUP) {
			t.Errorf("getxattr trusted.* %s: %v, want ENOTSUP", path, err)
		}
		if _, err := syscall.Getxattr(path, "user.x", buf); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("getxattr user.x %s: %v, want ENODATA", path, err)
		}
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Errorf("no-op chmod: %v", err)
	}
	for _, x := range []string{fs.XattrSHA256, fs.XattrMD5, fs.XattrSHA512} {
		if err := syscall.Setxattr(p, x, []byte("00"), 0); !errors.Is(err, syscall.EPERM) {
			t.Errorf("setxattr %s: %v, want EPERM", x, err)
		}
		if err := syscall.Removexattr(p, x); !errors.Is(err, syscall.EPERM) {
			t.Errorf("removexattr %s: %v, want EPERM", x, err)
		}
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Errorf("mode after refused chmod: %v", st.Mode())
	}
}

// TestDigestXattrs: with --md5 and --sha512 (Sums) a written file lists
// and reads its three digests, equal to those of its bytes; one written
// with the default lists the SHA-256 alone, and the others read as
// ENODATA.
func TestDigestXattrs(t *testing.T) {
	e := mountContainer(t, mib, func(co *segments.ContainerOptions) { co.Sums = segments.Sums{MD5: true, SHA512: true} }, nil)
	d := mount(t, mib)
	data := randBytes(3*mib+5, 9)
	m5, s256, s512 := md5.Sum(data), sha256.Sum256(data), sha512.Sum512(data)
	want := map[string]string{fs.XattrMD5: hex.EncodeToString(m5[:]), fs.XattrSHA256: hex.EncodeToString(s256[:]),
		fs.XattrSHA512: hex.EncodeToString(s512[:])}
	for _, m := range []struct {
		dir  string
		list string
	}{{e.dir, fs.XattrSHA256 + "\x00" + fs.XattrMD5 + "\x00" + fs.XattrSHA512 + "\x00"}, {d.dir, fs.XattrSHA256 + "\x00"}} {
		p := filepath.Join(m.dir, "f.img")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		if n, err := syscall.Listxattr(p, buf); err != nil || string(buf[:n]) != m.list {
			t.Errorf("listxattr = %q, %v; want %q", buf[:max(n, 0)], err, m.list)
		}
		for attr, sum := range want {
			n, err := syscall.Getxattr(p, attr, buf)
			listed := strings.Contains(m.list, attr)
			switch {
			case listed && (err != nil || string(buf[:n]) != sum):
				t.Errorf("getxattr %s = %q, %v; want %s", attr, buf[:max(n, 0)], err, sum)
			case !listed && !errors.Is(err, syscall.ENODATA):
				t.Errorf("getxattr %s of a file written without it: %v, want ENODATA", attr, err)
			}
		}
	}
}

// TestRenameNamesAreExact: right after mv, with a long attribute TTL, the
// new name reads the moved content and a write to it reaches the object of
// the new name; the old name is gone; a file created under the old name
// is a new file with its own inode.
func TestRenameNamesAreExact(t *testing.T) {
	e := mountWith(t, mib, func(o *fs.Options, mo *fusefs.Options) { o.AttrTTL = time.Minute })
	a, b := filepath.Join(e.dir, "a.img"), filepath.Join(e.dir, "b.img")
	if err := os.WriteFile(a, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("old b"), 0o644); err != nil {
		t.Fatal(err)
	}
	sa, _ := os.Stat(a)
	if _, err := os.Stat(b); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(b); err != nil || string(got) != "one" {
		t.Fatalf("read b right after mv: %q, %v", got, err)
	}
	if err := os.WriteFile(b, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(b); err != nil || string(got) != "two" {
		t.Fatalf("read b after writing it: %q, %v", got, err)
	}
	if _, err := os.Stat(a); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old name after mv: %v", err)
	}
	if n := strings.Join(e.st.Names("c"), " "); n != "b.img" {
		t.Errorf("container holds %q, want b.img", n)
	}
	sb, _ := os.Stat(b)
	if ino(sb) != ino(sa) {
		t.Errorf("the moved file changed inode: %d -> %d", ino(sa), ino(sb))
	}
	if err := os.WriteFile(a, []byte("new a"), 0o644); err != nil {
		t.Fatal(err)
	}
	sa2, _ := os.Stat(a)
	if ino(sa2) == ino(sb) {
		t.Errorf("a new a.img shares inode %d with b.img", ino(sb))
	}
	if got, _ := os.ReadFile(b); string(got) != "two" {
		t.Errorf("b after creating a new a: %q", got)
	}
}

// TestRenameOfOpenFile: a reader keeps reading what it opened after the
// file is renamed, and the new name serves the same data.
func TestRenameOfOpenFile(t *testing.T) {
	e := mountWith(t, mib, func(o *fs.Options, mo *fusefs.Options) { o.AttrTTL = time.Minute })
	a, b := filepath.Join(e.dir, "a.img"), filepath.Join(e.dir, "b.img")
	data := randBytes(3*mib, 7)
	if err := os.WriteFile(a, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read of the open file after mv: %v", err)
	}
	if got, err := os.ReadFile(b); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read of the new name: %v", err)
	}
}

func ino(st os.FileInfo) uint64 {
	if st == nil {
		return 0
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// TestSecondOpenForWriting: while a file is open for writing, another open
// for writing gets EBUSY (one upload per file); an open for writing that
// wrote nothing gives the file back at close, so that the next one (libvirt
// closes and reopens its disks) succeeds at once.
func TestSecondOpenForWriting(t *testing.T) {
	e := mount(t, mib)
	p := filepath.Join(e.dir, "disk.raw")
	if err := os.WriteFile(p, randBytes(3*mib, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.OpenFile(p, os.O_RDWR, 0); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("a second open for writing: %v, want EBUSY", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		g, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatalf("open %d for writing right after a close: %v", i, err)
		}
		g.Close()
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, randBytes(3*mib, 3)) {
		t.Errorf("content after the opens: %v", err)
	}
}

// TestCloseAfterOpenerExits: a process opens a file, writes, passes the
// descriptor to a child and exits (its close commits); the child writes
// more and closes last. That last close commits too and returns the real
// result: here Swift refuses the commit, and the child's close(2) gets
// EIO, not 0.
func TestCloseAfterOpenerExits(t *testing.T) {
	e := mount(t, mib)
	p := filepath.Join(e.dir, "f.img")
	result := filepath.Join(t.TempDir(), "result")
	var puts atomic.Int32
	e.st.SetHook(func(op, c, o string) error {
		if op == "PUT" && c == "c" && o == "f.img" && puts.Add(1) == 2 {
			return &segments.StatusError{Op: "PUT", Object: "c/f.img", Code: 500}
		}
		return nil
	})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "IMAGEFS_HELPER=opener", "IMAGEFS_HELPER_FILE="+p, "IMAGEFS_HELPER_RESULT="+result)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("opener: %v: %s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	var got []byte
	for {
		got, _ = os.ReadFile(result)
		if len(got) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(got) != "close: input/output error" {
		t.Fatalf("the child's last close returned %q, want EIO", got)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "first" {
		t.Errorf("the file after the refused commit: %q %v (want the opener's version)", b, err)
	}
}

// TestHelperProcess is the opener and the child of TestCloseAfterOpenerExits
// (run as separate processes); otherwise it does nothing.
func TestHelperProcess(t *testing.T) {
	p, result := os.Getenv("IMAGEFS_HELPER_FILE"), os.Getenv("IMAGEFS_HELPER_RESULT")
	switch os.Getenv("IMAGEFS_HELPER") {
	case "opener":
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("first")); err != nil {
			t.Fatal(err)
		}
		child := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		child.Env = append(os.Environ(), "IMAGEFS_HELPER=child", fmt.Sprintf("IMAGEFS_HELPER_PARENT=%d", os.Getpid()))
		child.ExtraFiles = []*os.File{f}
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		os.Exit(0) // the kernel closes f: the opener's flush
	case "child":
		parent := os.Getenv("IMAGEFS_HELPER_PARENT")
		for i := 0; i < 200; i++ { // until the opener is gone
			if _, err := os.Stat("/proc/" + parent); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		f := os.NewFile(3, "inherited")
		msg := "close: ok"
		if _, err := f.Write([]byte(" second")); err != nil {
			msg = "write: " + err.Error()
		} else if err := f.Close(); err != nil {
			msg = "close: " + errors.Unwrap(err).Error()
		}
		_ = os.WriteFile(result, []byte(msg), 0o644)
		os.Exit(0)
	}
}

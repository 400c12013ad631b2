package fs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

// mountAccount serves the fake store's whole account on a temporary
// directory, with the containers given made first.
func mountAccount(t *testing.T, createContainers bool, containers ...string) *env {
	t.Helper()
	requireFUSE(t)
	st := segmentstest.New()
	ctx := context.Background()
	for _, c := range containers {
		if err := st.CreateContainer(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool := segments.NewPool(mib, 2)
	acct := segments.NewAccount(segments.AccountOptions{Store: st, Container: func(name string) segments.ContainerOptions {
		return segments.ContainerOptions{Store: st, Pool: pool, Limits: segments.DefaultLimits, Log: log,
			Retry: segments.RetryPolicy{Base: time.Millisecond, Cap: time.Millisecond, Budget: 10 * time.Millisecond}}
	}})
	root := fs.NewAccount(ctx, fs.AccountOptions{Options: fs.Options{Log: log}, Account: acct, CreateContainers: createContainers})
	dir := t.TempDir()
	opts := root.MountOptions("imagefs-test", false)
	opts.DirectMount = os.Geteuid() == 0
	server, err := fusefs.Mount(dir, root, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			t.Errorf("unmount: %v", err)
		}
	})
	return &env{st: st, dir: dir}
}

func lsNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range ents {
		n := en.Name()
		if en.IsDir() {
			n += "/"
		}
		out = append(out, n)
	}
	return out
}

// TestAccountMount: the containers are the top directories (segment
// containers hidden, new ones seen at once), each browsable, readable and
// writable as a container mount (segments in its own segment container,
// versions retired there), with inode numbers unique across containers;
// the top level refuses what would create, delete or rename containers.
func TestAccountMount(t *testing.T) {
	e := mountAccount(t, false, "a", "a_segments", "b", "glance_1", "orphan_segments")
	ctx := context.Background()
	put := func(c, name string, data []byte) {
		t.Helper()
		if _, err := e.st.Put(ctx, c, name, bytes.NewReader(data), int64(len(data)), "", segments.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "x.img", []byte("in a"))
	put("b", "dir/x.img", []byte("in b"))

	if got, want := lsNames(t, e.dir), []string{"a/", "b/", "glance_1/"}; !slices.Equal(got, want) {
		t.Errorf("ls / = %q, want %q", got, want)
	}
	for _, hidden := range []string{"a_segments", "orphan_segments", "nope"} {
		if _, err := os.Stat(filepath.Join(e.dir, hidden)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat %s: %v, want ENOENT", hidden, err)
		}
	}
	if got, want := lsNames(t, filepath.Join(e.dir, "b")), []string{"dir/"}; !slices.Equal(got, want) {
		t.Errorf("ls b = %q, want %q", got, want)
	}
	for p, want := range map[string]string{"a/x.img": "in a", "b/dir/x.img": "in b"} {
		if got, err := os.ReadFile(filepath.Join(e.dir, p)); err != nil || string(got) != want {
			t.Errorf("read %s = %q, %v; want %q", p, got, err, want)
		}
	}
	sa, _ := os.Stat(filepath.Join(e.dir, "a/x.img"))
	sb, _ := os.Stat(filepath.Join(e.dir, "b/dir/x.img"))
	sda, _ := os.Stat(filepath.Join(e.dir, "a"))
	sdb, _ := os.Stat(filepath.Join(e.dir, "b"))
	if inos := []uint64{ino(sa), ino(sb), ino(sda), ino(sdb)}; len(slices.Compact(slices.Sorted(slices.Values(inos)))) != 4 {
		t.Errorf("inode numbers %v are not unique", inos)
	}

	// Writes inside a container: a large file, then an overwrite.
	big := randBytes(5*mib/2, 7)
	p := filepath.Join(e.dir, "b", "big.img")
	for i := range 2 {
		big[0] = byte(i)
		if err := os.WriteFile(p, big, 0o644); err != nil {
			t.Fatalf("write b/big.img: %v", err)
		}
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read back b/big.img: %d bytes, %v", len(got), err)
	}
	in, err := e.st.Head(ctx, "b", "big.img")
	if err != nil || !in.SLO {
		t.Fatalf("b/big.img in Swift: %+v, %v; want an SLO", in, err)
	}
	segs, records := 0, 0
	for _, n := range e.st.Names("b_segments") {
		switch {
		case strings.HasPrefix(n, "big.img/"):
			segs++
		case strings.HasPrefix(n, ".imagefs/retired/"):
			records++
		}
	}
	if segs == 0 || records != 1 {
		t.Errorf("b_segments holds %d segments of big.img and %d retirement records; want some and 1", segs, records)
	}
	if got, want := lsNames(t, e.dir), []string{"a/", "b/", "glance_1/"}; !slices.Equal(got, want) {
		t.Errorf("ls / after a write = %q, want %q (b_segments hidden)", got, want)
	}
	if err := os.Rename(p, filepath.Join(e.dir, "b", "moved.img")); err != nil {
		t.Errorf("rename in a container: %v", err)
	}
	if err := os.Rename(filepath.Join(e.dir, "b", "moved.img"), filepath.Join(e.dir, "a", "moved.img")); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("rename across containers: %v, want EXDEV", err)
	}
	if err := os.Remove(filepath.Join(e.dir, "b", "moved.img")); err != nil {
		t.Errorf("rm in a container: %v", err)
	}

	// The top level holds containers only.
	if err := os.Mkdir(filepath.Join(e.dir, "c"), 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir at the top: %v, want EPERM", err)
	}
	if err := os.Remove(filepath.Join(e.dir, "glance_1")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("rmdir of a container: %v, want EPERM", err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "f"), nil, 0o644); !errors.Is(err, syscall.EPERM) {
		t.Errorf("create at the top: %v, want EPERM", err)
	}
	if err := os.Rename(filepath.Join(e.dir, "a"), filepath.Join(e.dir, "z")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("rename of a container: %v, want EPERM", err)
	}
	if _, err := e.st.HeadContainer(ctx, "c"); err == nil {
		t.Errorf("container c exists after a refused mkdir")
	}

	// A container made elsewhere shows up (AttrTTL 0).
	if err := e.st.CreateContainer(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	put("later", "l.img", []byte("later"))
	if got, err := os.ReadFile(filepath.Join(e.dir, "later", "l.img")); err != nil || string(got) != "later" {
		t.Errorf("read later/l.img: %q, %v", got, err)
	}
	if got := lsNames(t, e.dir); !slices.Contains(got, "later/") {
		t.Errorf("ls / = %q, want later/ in it", got)
	}
}

// TestAccountMkdirCreatesContainer: with CreateContainers, mkdir at the
// top creates the container, which then takes files; a segment
// container's name is still refused.
func TestAccountMkdirCreatesContainer(t *testing.T) {
	e := mountAccount(t, true)
	if err := os.Mkdir(filepath.Join(e.dir, "new"), 0o755); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	if _, err := e.st.HeadContainer(context.Background(), "new"); err != nil {
		t.Fatalf("container new: %v", err)
	}
	if err := os.Mkdir(filepath.Join(e.dir, "new"), 0o755); !errors.Is(err, os.ErrExist) {
		t.Errorf("second mkdir: %v, want EEXIST", err)
	}
	if err := os.Mkdir(filepath.Join(e.dir, "new_segments"), 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir of a segment container's name: %v, want EPERM", err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "new", "f.img"), []byte("data"), 0o644); err != nil {
		t.Fatalf("write in the new container: %v", err)
	}
	if got := e.st.Names("new"); !slices.Equal(got, []string{"f.img"}) {
		t.Errorf("container new holds %q", got)
	}
}

// df of an account mount gives the account's figures (every container),
// not one container's, and the account's quota.
func TestAccountStatfs(t *testing.T) {
	e := mountAccount(t, false, "a", "b")
	ctx := context.Background()
	for _, c := range []string{"a", "b"} {
		if _, err := e.st.Put(ctx, c, "img", bytes.NewReader(make([]byte, 100000)), 100000, "", segments.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(e.dir, &st); err != nil {
		t.Fatal(err)
	}
	if used := int64(st.Blocks-st.Bfree) * st.Frsize; used < 200000 || used > 300000 {
		t.Errorf("used %d bytes, want the two containers' 200000 (in 4 KiB blocks)", used)
	}
	if free := int64(st.Bfree) * st.Frsize; free != fs.NoQuotaAvail {
		t.Errorf("free %d without a quota, want %d", free, int64(fs.NoQuotaAvail))
	}
}

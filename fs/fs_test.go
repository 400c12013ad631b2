package fs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

const mib = 1 << 20

// requireFUSE skips when FUSE is unavailable, unless IMAGEFS_REQUIRE_FUSE=1
// (CI), where that is a failure.
func requireFUSE(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err == nil {
		f.Close()
		return
	}
	if os.Getenv("IMAGEFS_REQUIRE_FUSE") == "1" {
		t.Fatalf("FUSE required but unavailable: %v", err)
	}
	t.Skipf("no FUSE: %v", err)
}

type env struct {
	st   *segmentstest.Store
	dir  string
	root *fs.Root
	lat  *latencies // what Root.Mount reported
}

// latencies counts the FUSE requests Root.Mount reports, by operation.
type latencies struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *latencies) Add(op string, _ time.Duration) {
	l.mu.Lock()
	l.n[op]++
	l.mu.Unlock()
}

func (l *latencies) count(op string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[op]
}

// mount serves a fake store on a temporary directory for the test.
func mount(t *testing.T, segSize int64) *env {
	t.Helper()
	return mountWith(t, segSize, nil)
}

// mountWith is mount with options changed by tune (nil: none); allow_other
// is set when tune sets otherUsers.
func mountWith(t *testing.T, segSize int64, tune func(o *fs.Options, mo *fusefs.Options)) *env {
	t.Helper()
	return mountContainer(t, segSize, nil, tune)
}

// mountContainer is mountWith with the container's options changed by
// tuneC (nil: none) too.
func mountContainer(t *testing.T, segSize int64, tuneC func(co *segments.ContainerOptions), tune func(o *fs.Options, mo *fusefs.Options)) *env {
	t.Helper()
	requireFUSE(t)
	st := segmentstest.New()
	ctx := context.Background()
	for _, c := range []string{"c", "c_segments"} {
		if err := st.CreateContainer(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	co := segments.ContainerOptions{
		Store: st, Name: "c", Pool: segments.NewPool(segSize, 2), Limits: segments.DefaultLimits, Log: log,
		Retry: segments.RetryPolicy{Base: time.Millisecond, Cap: time.Millisecond, Budget: 10 * time.Millisecond},
	}
	if tuneC != nil {
		tuneC(&co)
	}
	o := fs.Options{Objects: segments.NewContainer(co), Log: log, AttrTTL: 0}
	var mo fusefs.Options
	if tune != nil {
		tune(&o, &mo)
	}
	root := fs.NewRoot(ctx, o)
	dir := t.TempDir()
	opts := root.MountOptions("imagefs-test", false)
	opts.DirectMount = os.Geteuid() == 0
	opts.AllowOther = mo.AllowOther
	lat := &latencies{n: map[string]int{}}
	server, err := root.Mount(dir, opts, lat)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			t.Errorf("unmount: %v", err)
		}
	})
	return &env{st: st, dir: dir, root: root, lat: lat}
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// segments lists the segment container without imagefs' state (leases,
// retirement records).
func (e *env) segments() []string {
	var out []string
	for _, n := range e.st.Names("c_segments") {
		if !strings.HasPrefix(n, ".imagefs/") {
			out = append(out, n)
		}
	}
	return out
}

func (e *env) put(t *testing.T, name string, data []byte, meta map[string]string) {
	t.Helper()
	if _, err := e.st.Put(context.Background(), "c", name, bytes.NewReader(data), int64(len(data)), "", segments.PutOptions{Meta: meta}); err != nil {
		t.Fatal(err)
	}
}

func TestListAndStat(t *testing.T) {
	e := mount(t, mib)
	e.put(t, "a.img", []byte("hello"), map[string]string{"mtime": "1700000000.5"})
	e.put(t, "dir/b.img", make([]byte, 1234), nil)
	e.put(t, "dir/sub/c.img", nil, nil)
	e.put(t, "marker/", nil, nil)

	if got, want := strings.Join(lsNames(t, e.dir), " "), "a.img dir/ marker/"; got != want {
		t.Errorf("ls / = %q, want %q", got, want)
	}
	if got, want := strings.Join(lsNames(t, filepath.Join(e.dir, "dir")), " "), "b.img sub/"; got != want {
		t.Errorf("ls /dir = %q, want %q", got, want)
	}
	st, err := os.Stat(filepath.Join(e.dir, "a.img"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 5 || st.ModTime().Unix() != 1700000000 {
		t.Errorf("stat a.img: size %d mtime %v", st.Size(), st.ModTime())
	}
	if st, err := os.Stat(filepath.Join(e.dir, "dir/b.img")); err != nil || st.Size() != 1234 {
		t.Errorf("stat dir/b.img: %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat nope: %v", err)
	}
}

func TestWriteReadBack(t *testing.T) {
	e := mount(t, mib)
	for _, size := range []int{0, 100, mib, 5*mib + 77} {
		data := randBytes(size, uint64(size))
		p := filepath.Join(e.dir, "f.img")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatalf("write %d: %v", size, err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %d: %v", size, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back %d bytes, differ", size, len(got))
		}
		sum, err := exec.Command("getfattr", "--only-values", "-n", fs.XattrSHA256, p).Output()
		if err == nil && len(sum) != 64 {
			t.Errorf("xattr sha256 = %q", sum)
		}
	}
}

func TestOverwriteKeepsOldUntilCommit(t *testing.T) {
	e := mount(t, mib)
	p := filepath.Join(e.dir, "f.img")
	old := randBytes(3*mib, 1)
	if err := os.WriteFile(p, old, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(randBytes(2*mib, 2)); err != nil {
		t.Fatal(err)
	}
	// Not committed yet: Swift still has the old version.
	rc, err := e.st.Get(context.Background(), "c", "f.img", 0, -1, "")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, old) {
		t.Fatal("old version not intact during the overwrite")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Size() != 2*mib {
		t.Errorf("size after commit %d", st.Size())
	}
}

func TestCloseReportsUploadFailure(t *testing.T) {
	e := mount(t, mib)
	e.st.SetHook(func(op, c, o string) error {
		if op == "PUT" && c == "c_segments" {
			return &segments.StatusError{Op: "PUT", Object: o, Code: 500}
		}
		return nil
	})
	f, err := os.Create(filepath.Join(e.dir, "bad.img"))
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(4*mib, 3)
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil && cerr == nil {
		t.Fatal("write and close succeeded although every segment upload failed")
	}
	if _, err := e.st.Head(context.Background(), "c", "bad.img"); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("a failed upload is visible: %v", err)
	}
	if st := e.root.Stats(); st.Commits != 0 || st.CommitFailures != 1 {
		t.Errorf("commits %d, failed %d; want 0 and 1", st.Commits, st.CommitFailures)
	}
}

func TestBackwardWriteIsESPIPE(t *testing.T) {
	e := mount(t, mib)
	f, err := os.Create(filepath.Join(e.dir, "seq.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(randBytes(4*mib, 4)); err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte("x"), 0)
	if !errors.Is(err, syscall.ESPIPE) {
		t.Fatalf("backward write: %v, want ESPIPE", err)
	}
}

func TestMkdirRmdirRm(t *testing.T) {
	e := mount(t, mib)
	d := filepath.Join(e.dir, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(d, 0o755); !errors.Is(err, os.ErrExist) {
		t.Errorf("second mkdir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(d, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir non-empty: %v", err)
	}
	if err := os.Remove(filepath.Join(d, "x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d); err != nil {
		t.Fatalf("rmdir: %v", err)
	}
	if n := e.st.Names("c"); len(n) != 0 {
		t.Errorf("left in the container: %v", n)
	}
}

func TestRename(t *testing.T) {
	e := mount(t, mib)
	a, b := filepath.Join(e.dir, "a.img"), filepath.Join(e.dir, "b.img")
	data := randBytes(3*mib, 5)
	if err := os.WriteFile(a, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("old b"), 0o644); err != nil {
		t.Fatal(err)
	}
	segs := len(e.segments())
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after rename: %v", err)
	}
	if _, err := os.Stat(a); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old name: %v", err)
	}
	if n := len(e.segments()); n != segs {
		t.Errorf("rename changed the segments: %d -> %d", segs, n)
	}
}

// TestExecWhileWriting: a writer that runs a command while its file is
// open (os/exec forks; the child closes its close-on-exec copy of the
// descriptor during execve) neither deadlocks the daemon nor commits the
// half-written file: only the writer's own close commits.
func TestExecWhileWriting(t *testing.T) {
	e := mount(t, mib)
	p := filepath.Join(e.dir, "vm.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(3*mib, 9)
	if _, err := f.Write(data[:mib]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- exec.Command("true").Run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("exec of a child hung while a file on the mount was open for writing")
	}
	if _, err := e.st.Head(context.Background(), "c", "vm.img"); !errors.Is(err, segments.ErrNotFound) {
		t.Fatalf("the child's close committed the half-written file: %v", err)
	}
	if _, err := f.Write(data[mib:]); err != nil {
		t.Fatalf("write after the child exec'd: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content after close: %v, %d bytes", err, len(got))
	}
}

package fs_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

// mountHost mounts container c of st as one host would: its own block
// cache and its own versions (lease).
func mountHost(t *testing.T, st *segmentstest.Store, traces bool) (string, *fs.Root) {
	return mountHostDir(t, st, traces, "")
}

// mountHostDir is mountHost with a persistent cache in cacheDir.
func mountHostDir(t *testing.T, st *segmentstest.Store, traces bool, cacheDir string) (string, *fs.Root) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	blocks, err := cache.New(cache.Options{Memory: 64 * mib, Dir: cacheDir, DirSize: 256 * mib, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	co := segments.ContainerOptions{Store: st, Name: "c", Pool: segments.NewPool(mib, 2), Limits: segments.DefaultLimits, Log: log,
		Retry: segments.RetryPolicy{Base: time.Millisecond, Cap: time.Millisecond, Budget: 10 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	root := fs.NewRoot(ctx, fs.Options{Objects: segments.NewContainer(co), Log: log, Blocks: blocks, BootTraces: traces, TraceWindow: 5 * time.Second})
	dir := t.TempDir()
	opts := root.MountOptions("imagefs-test", false)
	opts.DirectMount = os.Geteuid() == 0
	server, err := root.Mount(dir, opts, nil)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			t.Errorf("unmount: %v", err)
		}
		cancel()
		blocks.Close()
	})
	return dir, root
}

// getCounter counts the GETs of one object of the fake store.
type getCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (g *getCounter) hook(op, c, o string) error {
	if op == "get" && c == "c" {
		g.mu.Lock()
		g.n[o]++
		g.mu.Unlock()
	}
	return nil
}

func (g *getCounter) count(o string) int { g.mu.Lock(); defer g.mu.Unlock(); return g.n[o] }

func traceNames(st *segmentstest.Store) []string {
	var out []string
	for _, n := range st.Names("c_segments") {
		if strings.HasPrefix(n, ".imagefs/traces/") {
			out = append(out, n)
		}
	}
	return out
}

func readPattern(t *testing.T, p string, offs []int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for _, off := range offs {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
}

// TestBootTraceRecordReplay: host A records the blocks its first opens
// read (a probe that reads the header and closes, then the boot) and
// stores the trace soon after the last close; host B's first open prefetches
// them before it reads them (no GET after the open's prefetch); after an
// overwrite, the old trace is not used; with traces off, nothing is
// recorded.
func TestBootTraceRecordReplay(t *testing.T) {
	requireFUSE(t)
	st := segmentstest.New()
	for _, c := range []string{"c", "c_segments"} {
		if err := st.CreateContainer(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	gets := &getCounter{n: map[string]int{}}
	st.SetHook(gets.hook)
	data := randBytes(16*mib, 7)
	if _, err := st.Put(t.Context(), "c", "img", strings.NewReader(string(data)), int64(len(data)), "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	offs := []int64{9 * mib, 1 * mib, 13*mib + 300<<10, 5 * mib}

	dirA, rootA := mountHost(t, st, true)
	// As libvirt and qemu do: a probe reads the header and closes, then
	// the open that boots reads.
	readPattern(t, dirA+"/img", []int64{0})
	readPattern(t, dirA+"/img", offs)
	var names []string
	for deadline := time.Now().Add(5 * time.Second); len(names) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		names = traceNames(st)
	}
	if len(names) != 1 || rootA.Stats().TracesRecorded != 1 {
		t.Fatalf("traces after host A's close: %v, recorded %d", names, rootA.Stats().TracesRecorded)
	}
	m, _, err := segments.Resolve(t.Context(), st, "c", "img")
	if err != nil {
		t.Fatal(err)
	}
	v := segments.NewVersions(st, segments.VersionsOptions{Container: "c"})
	tr, err := v.GetTrace(t.Context(), "img", m.Version, m.Size())
	if err != nil {
		t.Fatal(err)
	}
	holds := func(e segments.Extent, off int64) bool { return e.Off <= off && off < e.Off+e.Len }
	if len(tr.Extents) < 2 || !holds(tr.Extents[0], 0) || !holds(tr.Extents[1], offs[0]) {
		t.Errorf("extents %+v do not begin with the probe's read at 0 and the boot's first at %d", tr.Extents, offs[0])
	}
	for _, off := range offs {
		found := false
		for _, e := range tr.Extents {
			found = found || holds(e, off)
		}
		if !found {
			t.Errorf("no extent holds the read at %d: %+v", off, tr.Extents)
		}
	}
	if tr.Bytes() > 5*mib {
		t.Errorf("trace of 5 reads of 64KiB names %d bytes", tr.Bytes())
	}

	dirB, rootB := mountHost(t, st, true)
	f, err := os.Open(dirB + "/img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := tr.Bytes()
	for deadline := time.Now().Add(5 * time.Second); rootB.Stats().TraceBytes < want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if s := rootB.Stats(); s.TracesReplayed != 1 || s.TraceBytes < want {
		t.Fatalf("host B replayed %d traces, %d bytes; want 1, %d", s.TracesReplayed, s.TraceBytes, want)
	}
	before := gets.count("img")
	buf := make([]byte, 64<<10)
	for _, off := range offs {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if n := gets.count("img") - before; n != 0 {
		t.Errorf("host B's reads of the traced blocks made %d GETs, want 0", n)
	}

	// Overwrite: host B's next first open is of another version, which
	// has no trace: it records, replays nothing.
	data2 := randBytes(16*mib, 8)
	if _, err := st.Put(t.Context(), "c", "img", strings.NewReader(string(data2)), int64(len(data2)), "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past the attribute TTL (0) and the meta cache
	readPattern(t, dirB+"/img", offs[:1])
	time.Sleep(300 * time.Millisecond)
	if s := rootB.Stats(); s.TracesReplayed != 1 {
		t.Errorf("host B replayed %d traces after the overwrite, want still 1", s.TracesReplayed)
	}

	// Off: no trace recorded.
	data3 := randBytes(4*mib, 9)
	if _, err := st.Put(t.Context(), "c", "other", strings.NewReader(string(data3)), int64(len(data3)), "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	dirC, rootC := mountHost(t, st, false)
	readPattern(t, dirC+"/other", offs[1:2])
	time.Sleep(300 * time.Millisecond)
	for _, n := range traceNames(st) {
		if strings.HasPrefix(n, ".imagefs/traces/other/") {
			t.Errorf("trace recorded with boot traces off: %s", n)
		}
	}
	if s := rootC.Stats(); s.TracesRecorded != 0 || s.TracesReplayed != 0 {
		t.Errorf("boot traces off: %+v", s)
	}
}

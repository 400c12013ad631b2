//go:build integration

package integration

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestBootTraces: host A's first open reads a pattern of blocks and
// closes; the trace object appears in the segment container (hidden from
// listings); host B, with its own cache, opens the image and the traced
// blocks are fetched before it reads them (its reads then make no data
// GET); after an overwrite, the old trace is not used.
func TestBootTraces(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 141, Size: 64 << 20}
	labtest.PutSLO(t, c, "vm.img", p, p.Size, 16<<20)
	offs := []int64{40 << 20, 0, 17<<20 + 300<<10, 63 << 20, 8 << 20}
	readAt := func(path string) {
		t.Helper()
		f := labtest.OpenDirect(t, path)
		buf := make([]byte, 64<<10)
		for _, off := range offs {
			if _, err := f.ReadAt(buf, off); err != nil {
				t.Fatalf("read %s at %d: %v", path, off, err)
			}
			if string(buf) != string(p.Bytes(off, int64(len(buf)))) {
				t.Fatalf("read %s at %d: wrong bytes", path, off)
			}
		}
		f.Close()
	}
	traces := func() []string {
		var out []string
		for _, n := range labtest.StateNames(t, c) {
			if strings.HasPrefix(n, ".imagefs/traces/") {
				out = append(out, n)
			}
		}
		return out
	}

	a := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--boot-trace-window", "10s"}})
	readAt(a.Path("vm.img"))
	var names []string
	for deadline := time.Now().Add(10 * time.Second); len(names) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		names = traces()
	}
	if len(names) != 1 || !strings.HasPrefix(names[0], ".imagefs/traces/vm.img/") {
		t.Fatalf("trace objects after host A's close: %v", names)
	}

	fp := labtest.NewFaultProxy(t)
	b := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL, "--cache-dir", t.TempDir()}})
	f := labtest.OpenDirect(t, b.Path("vm.img")) // opened, not read yet
	var n0 int
	var b0 int64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if n0, b0 = fp.DataGETs(); b0 >= int64(len(offs))*(64<<10) {
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
	n0, b0 = fp.DataGETs()
	if b0 < int64(len(offs))*(64<<10) || b0 > 8<<20 {
		t.Fatalf("host B prefetched %d bytes in %d GETs after its open; want the traced blocks", b0, n0)
	}
	buf := make([]byte, 64<<10)
	for _, off := range offs {
		if _, err := f.ReadAt(buf, off); err != nil || string(buf) != string(p.Bytes(off, int64(len(buf)))) {
			t.Fatalf("host B read at %d: %v or wrong bytes", off, err)
		}
	}
	if n1, b1 := fp.DataGETs(); n1 != n0 {
		t.Errorf("host B's reads of the traced blocks made %d data GETs (%d bytes), want 0", n1-n0, b1-b0)
	}
	f.Close()
	if !strings.Contains(b.LogText(), "replaying a boot trace") {
		t.Error("host B's log does not show the replay")
	}

	// Overwrite (with the swift client): the new version has no trace; host B's
	// next open prefetches nothing and records the new one.
	q := labtest.Pattern{Seed: 142, Size: 64 << 20}
	labtest.PutSLO(t, c, "vm.img", q, q.Size, 16<<20)
	time.Sleep(1500 * time.Millisecond) // past the attribute TTL
	n2, _ := fp.DataGETs()
	g := labtest.OpenDirect(t, b.Path("vm.img"))
	time.Sleep(1500 * time.Millisecond)
	if n3, b3 := fp.DataGETs(); n3 != n2 {
		t.Errorf("the open after an overwrite made %d data GETs (%d bytes) before any read: the old trace was used", n3-n2, b3)
	}
	g.Close()
	if n := strings.Count(b.LogText(), "replaying a boot trace"); n != 1 {
		t.Errorf("host B replayed %d traces, want 1 (the overwritten version's trace must not be used)", n)
	}
	ents, err := os.ReadDir(b.Dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "vm.img" {
		t.Errorf("listing of the mount: %v, %v; want only vm.img", ents, err)
	}
}

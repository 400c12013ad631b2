package segments_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/segments"
)

// TestTraces: a trace is stored and read back for its version only;
// gc's prune removes the traces of versions that were overwritten or
// removed, keeps the current one's, and the orphan scan and the reaper
// leave traces alone.
func TestTraces(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	v := host(st, "a", newClock())
	commit(t, st, v, "img", randBytes(3*mib, 1), nil)
	commit(t, st, v, "gone", randBytes(2*mib, 2), nil)
	m1, _, err := segments.Resolve(ctx, st, "c", "img")
	if err != nil {
		t.Fatal(err)
	}
	tr := &segments.Trace{Version: m1.Version, Extents: []segments.Extent{{Off: mib, Len: 64 << 10}, {Off: 0, Len: 4096}}}
	if err := v.PutTrace(ctx, "img", tr); err != nil {
		t.Fatal(err)
	}
	got, err := v.GetTrace(ctx, "img", m1.Version, m1.Size())
	if err != nil || len(got.Extents) != 2 || got.Extents[0] != tr.Extents[0] {
		t.Fatalf("GetTrace = %+v, %v", got, err)
	}
	if _, err := v.GetTrace(ctx, "img", "otherversion", m1.Size()); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("trace of another version: %v, want ErrNotFound", err)
	}
	mg, _, _ := segments.Resolve(ctx, st, "c", "gone")
	if err := v.PutTrace(ctx, "gone", &segments.Trace{Version: mg.Version, Extents: []segments.Extent{{Off: 0, Len: 1}}}); err != nil {
		t.Fatal(err)
	}
	// Overwrite img, remove gone: both old traces are stale; a trace of
	// the new version of img is kept.
	commit(t, st, v, "img", randBytes(3*mib, 3), nil)
	m2, in2, _ := segments.Resolve(ctx, st, "c", "img")
	if err := v.PutTrace(ctx, "img", &segments.Trace{Version: m2.Version, Extents: []segments.Extent{{Off: 0, Len: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.GetTrace(ctx, "img", m1.Version, in2.Size); err != nil {
		t.Fatalf("old trace before prune: %v", err)
	}
	ing, _ := st.Head(ctx, "c", "gone")
	if err := v.Remove(ctx, ing); err != nil {
		t.Fatal(err)
	}
	// Neither gc's orphan scan nor the reaper touch traces.
	if _, err := v.Reap(ctx, segments.ReapOptions{MinAge: 0, Delete: true}); err != nil {
		t.Fatal(err)
	}
	rep, err := segments.FindOrphans(ctx, st, segments.GCOptions{Container: "c", MinAge: 0})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range rep.Orphans {
		if strings.Contains(u.Prefix, ".imagefs/") {
			t.Errorf("orphan scan counts state: %s", u.Prefix)
		}
	}
	if n, err := v.PruneTraces(ctx, true); err != nil || n != 2 {
		t.Fatalf("dry-run prune: %d, %v; want 2", n, err)
	}
	if _, err := v.GetTrace(ctx, "img", m1.Version, in2.Size); err != nil {
		t.Fatalf("dry run deleted: %v", err)
	}
	if n, err := v.PruneTraces(ctx, false); err != nil || n != 2 {
		t.Fatalf("prune: %d, %v; want 2", n, err)
	}
	var left []string
	for _, n := range st.Names("c_segments") {
		if strings.HasPrefix(n, ".imagefs/traces/") {
			left = append(left, n)
		}
	}
	if want := segments.TraceName("img", m2.Version); len(left) != 1 || left[0] != want {
		t.Errorf("traces left %v, want [%s]", left, want)
	}
}

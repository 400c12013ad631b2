package segments_test

import (
	"testing"

	"github.com/imagefs/imagefs/segments"
)

// Progress and the pool's memory follow an upload: memory is taken while
// segments are written and given back after the commit, which leaves
// every segment stored.
func TestProgressAndPoolStats(t *testing.T) {
	st := newFake(t)
	pool := segments.NewPool(mib, 2)
	w := segments.NewWriter(t.Context(), st, "f.img", segments.WriterOptions{Container: "c", Pool: pool})
	data := make([]byte, 2*mib+mib/2)
	if _, err := w.WriteAt(t.Context(), data, 0); err != nil {
		t.Fatal(err)
	}
	if ps := pool.Stats(); ps.MemoryInUse == 0 || ps.MemoryBudget != 3*mib || ps.Workers != 2 {
		t.Errorf("pool while writing: %+v", ps)
	}
	if p := w.Progress(); p.Object != "f.img" || p.State != "writing" || p.Written != int64(len(data)) || p.Uploaded > p.Written {
		t.Errorf("progress while writing: %+v", p)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ps := pool.Stats(); ps.MemoryInUse != 0 || ps.Uploads != 0 {
		t.Errorf("pool after commit: %+v", ps)
	}
	if p := w.Progress(); p.Uploaded != int64(len(data)) || p.Done != 3 || p.InFlight != 0 || p.Queued != 0 {
		t.Errorf("progress after commit: %+v", p)
	}
}

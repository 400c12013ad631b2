package segments_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
)

// TestGCFindsOnlyOrphans: committed files (plain, SLO with holes, nested
// SLO, DLO) keep every segment; an aborted upload's and a replaced
// version's leftovers are orphans once old enough, and young ones are left.
func TestGCFindsOnlyOrphans(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	pool := segments.NewPool(mib, 2)
	commit := func(name string, data []byte, maxSeg int, holeAt int64) *segments.Writer {
		t.Helper()
		w := segments.NewWriter(ctx, st, name, segments.WriterOptions{Container: "c", Pool: pool, MaxSegments: maxSeg})
		writeAll(t, w, data, mib)
		if holeAt > 0 {
			if _, err := w.WriteAt(ctx, []byte("x"), holeAt); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return w
	}
	commit("plain.img", randBytes(1000, 1), 0, 0)
	commit("slo.img", randBytes(3*mib, 2), 0, 10*mib) // segments + holes (zero segment)
	commit("nested.img", randBytes(9*mib, 3), 3, 0)   // sub-manifests
	// A DLO written by another tool, its segments in c_segments.
	for i, b := range [][]byte{[]byte("dlo-a"), []byte("dlo-b")} {
		name := "other/dlo/" + string(rune('0'+i))
		if _, err := st.Put(ctx, "c_segments", name, bytes.NewReader(b), int64(len(b)), "", segments.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Put(ctx, "c", "dlo.img", bytes.NewReader(nil), 0, "", segments.PutOptions{DLO: "c_segments/other/dlo/"}); err != nil {
		t.Fatal(err)
	}
	// An abandoned upload: segments uploaded, never committed (a crash).
	crashed := segments.NewWriter(ctx, st, "crashed.img", segments.WriterOptions{Container: "c", Pool: pool})
	writeAll(t, crashed, randBytes(3*mib, 4), mib)
	if err := crashed.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// A leftover of another tool, not in imagefs' naming scheme.
	if _, err := st.Put(ctx, "c_segments", "stray/1/00000000", strings.NewReader("zz"), 2, "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{crashed.SegmentPrefix(), "stray/1/"}

	// Everything is seconds old: with a one-hour threshold nothing is an
	// orphan; an hour later the two leftovers are.
	rep, err := segments.FindOrphans(ctx, st, segments.GCOptions{Container: "c", MinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Orphans) != 0 || len(rep.Young) != 2 {
		t.Fatalf("young uploads: orphans %v, young %v", prefixes(rep.Orphans), prefixes(rep.Young))
	}
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	o := segments.GCOptions{Container: "c", MinAge: time.Hour, Now: later}
	rep, err = segments.FindOrphans(ctx, st, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := prefixes(rep.Orphans); !slices.Equal(got, want) {
		t.Fatalf("orphans %v, want %v", got, want)
	}
	if n, _ := rep.OrphanSegments(); n != 4 { // 3 of crashed.img + the stray
		t.Errorf("%d orphan segments, want 4", n)
	}
	if rep.Manifests != 3 { // slo, nested, dlo
		t.Errorf("%d manifests, want 3", rep.Manifests)
	}
	before := st.Names("c_segments")
	n, err := segments.DeleteOrphans(ctx, st, rep, o)
	if err != nil || n != 4 {
		t.Fatalf("DeleteOrphans = %d, %v", n, err)
	}
	if left := len(st.Names("c_segments")); left != len(before)-4 {
		t.Errorf("%d segments left, want %d", left, len(before)-4)
	}
	// Every committed file still reads back whole.
	for _, name := range []string{"plain.img", "slo.img", "nested.img", "dlo.img"} {
		readBack(t, st, name)
	}
	rep, err = segments.FindOrphans(ctx, st, o)
	if err != nil || len(rep.Orphans)+len(rep.Young) != 0 {
		t.Errorf("after gc: %v %v %v", prefixes(rep.Orphans), prefixes(rep.Young), err)
	}
}

func prefixes(us []segments.Upload) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.Prefix)
	}
	return out
}

// TestGCActiveUploadIsYoung: an upload that started long ago but still
// uploads segments is young by its newest segment's Last-Modified.
func TestGCActiveUploadIsYoung(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	if err := st.CreateContainer(ctx, "c_segments"); err != nil {
		t.Fatal(err)
	}
	old := segments.NewUploadID(time.Now().Add(-48 * time.Hour))
	name := "big.img/" + old + "/00000000"
	if _, err := st.Put(ctx, "c_segments", name, strings.NewReader("x"), 1, "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := segments.FindOrphans(ctx, st, segments.GCOptions{Container: "c", MinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Orphans) != 0 || len(rep.Young) != 1 {
		t.Errorf("orphans %v young %v", prefixes(rep.Orphans), prefixes(rep.Young))
	}
}

// TestGCNeverDeletesOnPartialKnowledge: a manifest that cannot be read
// fails the search.
func TestGCNeverDeletesOnPartialKnowledge(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	w := segments.NewWriter(ctx, st, "f.img", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 1)})
	writeAll(t, w, randBytes(3*mib, 5), mib)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	st.SetHook(func(op, c, o string) error {
		if op == "GET-MANIFEST" {
			return boom
		}
		return nil
	})
	_, err := segments.FindOrphans(ctx, st, segments.GCOptions{Container: "c"})
	if !errors.Is(err, boom) {
		t.Fatalf("FindOrphans = %v, want boom", err)
	}
	st.SetHook(nil)
	if _, err := segments.FindOrphans(context.Background(), st, segments.GCOptions{Container: "missing"}); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("missing container: %v", err)
	}
}

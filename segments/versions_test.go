package segments_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

// clock is a settable time for Versions.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// host is one mount's view: its own Versions (lease) on the shared store.
func host(st segments.ObjectStore, name string, clk *clock) *segments.Versions {
	return segments.NewVersions(st, segments.VersionsOptions{Container: "c", Host: name, Grace: time.Minute,
		LeaseTTL: 10 * time.Minute, Now: clk.now})
}

// commit writes data as the new version of name through v.
func commit(t *testing.T, st segments.ObjectStore, v *segments.Versions, name string, data []byte, under *segments.Manifest) *segments.Writer {
	t.Helper()
	w := segments.NewWriter(t.Context(), st, name, segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2), Versions: v, Under: under})
	writeAll(t, w, data, mib)
	if err := w.Commit(t.Context()); err != nil {
		t.Fatalf("commit %s: %v", name, err)
	}
	return w
}

func reap(t *testing.T, v *segments.Versions) *segments.ReapReport {
	t.Helper()
	rep, err := v.Reap(t.Context(), segments.ReapOptions{MinAge: time.Minute, Delete: true})
	if err != nil {
		t.Fatalf("reap: %v", err)
	}
	return rep
}

func segmentsUnder(st *segmentstest.Store, prefix string) int {
	n := 0
	for _, name := range st.Names("c_segments") {
		if strings.HasPrefix(name, prefix) {
			n++
		}
	}
	return n
}

// TestVersionsHeldElsewhere: a version that another host has open (its
// lease is in Swift) survives the overwrite, the grace period and every
// reap; once that host lets go (or its lease dies), the next reap
// removes it.
func TestVersionsHeldElsewhere(t *testing.T) {
	st, clk := newFake(t), newClock()
	a, b := host(st, "a", clk), host(st, "b", clk)
	old := randBytes(3*mib, 1)
	w0 := commit(t, st, a, "f", old, nil)
	m, _, err := segments.Resolve(t.Context(), st, "c", "f")
	if err != nil {
		t.Fatal(err)
	}
	hold, err := b.HoldNow(t.Context(), m) // the reader on host b
	if err != nil {
		t.Fatal(err)
	}
	commit(t, st, a, "f", randBytes(2*mib, 2), nil)
	clk.add(2 * time.Minute) // past the grace period; b's lease is fresh
	if rep := reap(t, a); rep.Deleted != 0 || rep.Pinned != 3 {
		t.Fatalf("reap while host b holds the old version: %+v", rep)
	}
	got := make([]byte, len(old))
	if _, err := segments.NewReader(st, m, segments.ReaderOptions{}).ReadAt(t.Context(), got, 0); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("host b reads the old version: %v", err)
	}
	hold.Release()
	if err := b.Close(t.Context()); err != nil { // b's lease now says nothing
		t.Fatal(err)
	}
	if rep := reap(t, a); rep.Deleted != 3 || rep.Done != 1 {
		t.Fatalf("reap after host b let go: %+v", rep)
	}
	if n := segmentsUnder(st, w0.SegmentPrefix()); n != 0 {
		t.Errorf("%d segments of the old version left", n)
	}
	if got, _ := readBack(t, st, "f"); len(got) != 2*mib {
		t.Error("the current version is damaged")
	}
}

// TestVersionsDeadLeaseLetsGo: a host that dies with a version open stops
// protecting it once its lease is older than the TTL.
func TestVersionsDeadLeaseLetsGo(t *testing.T) {
	st, clk := newFake(t), newClock()
	a, b := host(st, "a", clk), host(st, "b", clk)
	commit(t, st, a, "f", randBytes(3*mib, 1), nil)
	m, _, _ := segments.Resolve(t.Context(), st, "c", "f")
	if _, err := b.HoldNow(t.Context(), m); err != nil { // and host b crashes
		t.Fatal(err)
	}
	commit(t, st, a, "f", randBytes(mib/2, 2), nil)
	clk.add(2 * time.Minute) // past the grace period, not past b's lease
	if rep := reap(t, a); rep.Deleted != 0 {
		t.Fatalf("reaped while b's lease is live: %+v", rep)
	}
	// A lease is live until its TTL from the later of its own time and
	// Swift's Last-Modified (the fake's is the real clock).
	clk.add(time.Hour)
	if rep := reap(t, a); rep.Deleted != 3 {
		t.Fatalf("reap after b's lease died: %+v", rep)
	}
}

// TestVersionsConcurrentCommits: host A builds on the current version
// (opened without O_TRUNC) while host B overwrites it; whichever commit
// lands last, the visible version stays whole after every reap.
func TestVersionsConcurrentCommits(t *testing.T) {
	for _, order := range []string{"A-lands-between-B-retire-and-put", "A-lands-after-B"} {
		t.Run(order, func(t *testing.T) {
			st, clk := newFake(t), newClock()
			a, b := host(st, "a", clk), host(st, "b", clk)
			base := randBytes(4*mib, 3)
			commit(t, st, a, "f", base, nil)
			m, _, _ := segments.Resolve(t.Context(), st, "c", "f")
			wa := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2), Versions: a, Under: m})
			if _, err := wa.WriteAt(t.Context(), []byte("appended"), 4*mib); err != nil {
				t.Fatal(err)
			}
			want := append(bytes.Clone(base), "appended"...)
			fromB := randBytes(2*mib, 4)
			if order == "A-lands-between-B-retire-and-put" {
				var once sync.Once
				st.SetHook(func(op, c, o string) error {
					if op == "PUT-MANIFEST" && o == "f" {
						once.Do(func() {
							st.SetHook(nil)
							if err := wa.Commit(context.Background()); err != nil {
								t.Errorf("A's commit: %v", err)
							}
						})
					}
					return nil
				})
				commit(t, st, b, "f", fromB, nil) // B's manifest lands last
				want = fromB
			} else {
				commit(t, st, b, "f", fromB, nil)
				if err := wa.Commit(t.Context()); err != nil { // A's lands last
					t.Fatal(err)
				}
			}
			clk.add(time.Hour)
			reap(t, a)
			reap(t, b)
			if got, _ := readBack(t, st, "f"); !bytes.Equal(got, want) {
				t.Fatalf("the visible version is not whole: %d bytes", len(got))
			}
		})
	}
}

// TestVersionsRenameCrash: a rename that stopped between the copy and the
// delete leaves two names sharing segments; removing either one and
// reaping leaves the other whole.
func TestVersionsRenameCrash(t *testing.T) {
	for _, removed := range []string{"a", "b"} {
		t.Run("rm-"+removed, func(t *testing.T) {
			st, clk := newFake(t), newClock()
			v := host(st, "h", clk)
			data := randBytes(3*mib, 5)
			commit(t, st, v, "a", data, nil)
			crash := errors.New("crash")
			st.SetHook(func(op, c, o string) error {
				if op == "DELETE" && o == "a" {
					return crash
				}
				return nil
			})
			in, _ := st.Head(t.Context(), "c", "a")
			if err := v.Rename(t.Context(), in, "b"); !errors.Is(err, crash) {
				t.Fatalf("rename: %v", err)
			}
			st.SetHook(nil)
			gone, _ := st.Head(t.Context(), "c", removed)
			if err := v.Remove(t.Context(), gone); err != nil {
				t.Fatal(err)
			}
			clk.add(time.Hour)
			rep := reap(t, v)
			other := map[string]string{"a": "b", "b": "a"}[removed]
			if got, _ := readBack(t, st, other); !bytes.Equal(got, data) {
				t.Fatalf("%s damaged after removing %s: %+v", other, removed, rep)
			}
			// Removing the other too frees everything.
			in, _ = st.Head(t.Context(), "c", other)
			if err := v.Remove(t.Context(), in); err != nil {
				t.Fatal(err)
			}
			clk.add(time.Hour)
			reap(t, v)
			if n := segmentsUnder(st, "a/"); n != 0 {
				t.Errorf("%d segments left after removing both names", n)
			}
		})
	}
}

// TestVersionsDeleteScope: removing a large object deletes only what it
// owns: never objects of another container, never visible files of the
// mounted container, never anything outside the mount's prefix.
func TestVersionsDeleteScope(t *testing.T) {
	st, clk := newFake(t), newClock()
	ctx := t.Context()
	for _, c := range []string{"other", "c_segments"} {
		if err := st.CreateContainer(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	put := func(c, name string, data []byte, o segments.PutOptions) {
		t.Helper()
		if _, err := st.Put(ctx, c, name, bytes.NewReader(data), int64(len(data)), "", o); err != nil {
			t.Fatal(err)
		}
	}
	put("other", "k/keep.img", []byte("keep"), segments.PutOptions{})
	put("other", "k/kernel.img", []byte("kernel"), segments.PutOptions{})
	put("c", "imgs/visible.img", []byte("visible"), segments.PutOptions{})
	put("c", "uuid-00001", []byte("part1"), segments.PutOptions{})
	put("c", "uuid-00002", []byte("part2"), segments.PutOptions{})
	put("c", "p/outside-scope", []byte("x"), segments.PutOptions{})
	put("c", "outside-00001", []byte("x"), segments.PutOptions{})
	put("c", "into-other", nil, segments.PutOptions{DLO: "other/k"})
	put("c", "over-visible", nil, segments.PutOptions{DLO: "c/imgs/"})
	put("c", "uuid", nil, segments.PutOptions{DLO: "c/uuid-"})
	if _, err := st.PutManifest(ctx, "c", "slo-of-files", []segments.ManifestEntry{
		{Container: "c", Object: "imgs/visible.img", Size: 7}, {Container: "other", Object: "k/keep.img", Size: 4}}, segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	v := host(st, "h", clk)
	for _, name := range []string{"into-other", "over-visible", "slo-of-files", "uuid"} {
		in, err := st.Head(ctx, "c", name)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Remove(ctx, in); err != nil {
			t.Fatalf("remove %s: %v", name, err)
		}
	}
	// A prefixed mount never reaches outside its prefix.
	put("c", "p/img", nil, segments.PutOptions{DLO: "c/outside-"})
	pv := segments.NewVersions(st, segments.VersionsOptions{Container: "c", Scope: "p/", Host: "p", Grace: time.Minute, Now: clk.now})
	in, _ := st.Head(ctx, "c", "p/img")
	if err := pv.Remove(ctx, in); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Hour)
	reap(t, v)
	reap(t, pv)
	if got, want := strings.Join(st.Names("other"), " "), "k/keep.img k/kernel.img"; got != want {
		t.Errorf("container other: %q, want %q", got, want)
	}
	if got, want := strings.Join(st.Names("c"), " "), "imgs/visible.img outside-00001 p/outside-scope"; got != want {
		t.Errorf("container c: %q, want %q (the Glance parts gone, everything else kept)", got, want)
	}
}

// TestVersionsGlancePartReplaced: a Glance part recorded for deletion that
// is replaced by another object of the same name before the reap (another
// upload, a file created there) is not deleted.
func TestVersionsGlancePartReplaced(t *testing.T) {
	st, clk := newFake(t), newClock()
	ctx := t.Context()
	put := func(name string, data []byte, o segments.PutOptions) {
		t.Helper()
		if _, err := st.Put(ctx, "c", name, bytes.NewReader(data), int64(len(data)), "", o); err != nil {
			t.Fatal(err)
		}
	}
	put("img-00001", []byte("part"), segments.PutOptions{})
	put("img", nil, segments.PutOptions{DLO: "c/img-"})
	v := host(st, "h", clk)
	in, _ := st.Head(ctx, "c", "img")
	if err := v.Remove(ctx, in); err != nil {
		t.Fatal(err)
	}
	put("img-00001", []byte("a new file"), segments.PutOptions{})
	clk.add(time.Hour)
	reap(t, v)
	if _, err := st.Head(ctx, "c", "img-00001"); err != nil {
		t.Fatalf("the new img-00001 was deleted: %v", err)
	}
}

// TestCommitAnswerLost: Swift stores the manifest but the answer is an
// error; the writer finds its upload in place and reports success, and
// its segments stay.
func TestCommitAnswerLost(t *testing.T) {
	st := newFake(t)
	v := host(st, "h", newClock())
	data := randBytes(3*mib, 9)
	w := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2), Versions: v,
		Retry: segments.RetryPolicy{Base: time.Millisecond, Cap: time.Millisecond, Budget: time.Millisecond}})
	writeAll(t, w, data, mib)
	lost := &segments.StatusError{Op: "PUT", Object: "c/f", Code: 500}
	// The fake stores, then the hook turns the answer into an error.
	st.SetAfterHook(func(op, c, o string) error {
		if op == "PUT-MANIFEST" && o == "f" {
			return lost
		}
		return nil
	})
	if err := w.Commit(t.Context()); err != nil {
		t.Fatalf("commit with a lost answer: %v", err)
	}
	st.SetAfterHook(nil)
	if got, _ := readBack(t, st, "f"); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if n := segmentsUnder(st, w.SegmentPrefix()); n != 3 {
		t.Errorf("%d segments, want 3", n)
	}
}

// TestVersionsRecordUnreadable: a corrupt retirement record stops the reap
// before anything is deleted, with an error naming it.
func TestVersionsRecordUnreadable(t *testing.T) {
	st, clk := newFake(t), newClock()
	v := host(st, "h", clk)
	commit(t, st, v, "f", randBytes(3*mib, 1), nil)
	commit(t, st, v, "f", randBytes(3*mib, 2), nil)
	bad := ".imagefs/retired/00000000000000000001-x-deadbeef"
	if _, err := st.Put(t.Context(), "c_segments", bad, strings.NewReader("{not json"), 9, "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	before := len(st.Names("c_segments"))
	clk.add(time.Hour)
	_, err := v.Reap(t.Context(), segments.ReapOptions{MinAge: time.Minute, Delete: true})
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("reap with a corrupt record: %v", err)
	}
	if after := len(st.Names("c_segments")); after != before {
		t.Errorf("%d objects deleted despite the error", before-after)
	}
}

// TestVersionsManyRounds: a seeded random mix of overwrites (with and
// without O_TRUNC), renames, removes and reaps from two hosts, every
// current file checked against a model after each reap.
func TestVersionsManyRounds(t *testing.T) {
	st, clk := newFake(t), newClock()
	hosts := []*segments.Versions{host(st, "a", clk), host(st, "b", clk)}
	model := map[string][]byte{}
	names := []string{"x", "y", "z"}
	r := rand.New(rand.NewPCG(42, 42))
	for round := range 120 {
		v := hosts[r.IntN(2)]
		name := names[r.IntN(len(names))]
		switch op := r.IntN(5); {
		case op == 0 || model[name] == nil:
			data := randBytes(mib/2+r.IntN(3*mib), uint64(round))
			commit(t, st, v, name, data, nil)
			model[name] = data
		case op == 1:
			m, in, err := segments.Resolve(t.Context(), st, "c", name)
			if err != nil {
				t.Fatal(err)
			}
			if !in.SLO {
				continue // fs loads a small plain object instead
			}
			tail := []byte(fmt.Sprintf("round %d", round))
			w := segments.NewWriter(t.Context(), st, name, segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2), Versions: v, Under: m})
			if _, err := w.WriteAt(t.Context(), tail, m.Size()); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
			model[name] = append(bytes.Clone(model[name]), tail...)
		case op == 2:
			dst := names[r.IntN(len(names))]
			if dst == name {
				continue
			}
			in, _ := st.Head(t.Context(), "c", name)
			if err := v.Rename(t.Context(), in, dst); err != nil {
				t.Fatal(err)
			}
			model[dst], model[name] = model[name], nil
		case op == 3:
			in, _ := st.Head(t.Context(), "c", name)
			if err := v.Remove(t.Context(), in); err != nil {
				t.Fatal(err)
			}
			model[name] = nil
		default:
			clk.add(time.Duration(r.IntN(3)) * time.Minute)
			reap(t, v)
			for n, want := range model {
				if want == nil {
					continue
				}
				if got, _ := readBack(t, st, n); !bytes.Equal(got, want) {
					t.Fatalf("round %d: %s differs from the model", round, n)
				}
			}
		}
	}
	clk.add(time.Hour)
	for _, v := range hosts {
		reap(t, v)
	}
	// Only the current versions' segments are left.
	refs := 0
	for n, want := range model {
		if want == nil {
			continue
		}
		if got, _ := readBack(t, st, n); !bytes.Equal(got, want) {
			t.Fatalf("%s differs from the model at the end", n)
		}
		in, _ := st.Head(t.Context(), "c", n)
		if in.SLO {
			es, _ := st.GetManifest(t.Context(), "c", n)
			refs += len(es)
		}
	}
	left := 0
	for _, n := range st.Names("c_segments") {
		if !strings.HasPrefix(n, ".imagefs/") && !strings.HasSuffix(n, "/zero") {
			left++
		}
	}
	if left > refs {
		t.Errorf("%d segments left, the current versions reference %d", left, refs)
	}
}

// TestVersionsReapOwnRecords: a mount's own reap (OnlyHost) deletes what it
// retired and leaves another host's retirements to that host (or gc).
func TestVersionsReapOwnRecords(t *testing.T) {
	st, clk := newFake(t), newClock()
	a, b := host(st, "a", clk), host(st, "b", clk)
	wa := commit(t, st, a, "x", randBytes(3*mib, 1), nil)
	wb := commit(t, st, b, "y", randBytes(3*mib, 2), nil)
	commit(t, st, a, "x", randBytes(2*mib, 3), nil) // a retires x's first version
	commit(t, st, b, "y", randBytes(2*mib, 4), nil) // b retires y's
	clk.add(time.Hour)
	rep, err := a.Reap(t.Context(), segments.ReapOptions{MinAge: time.Minute, OnlyHost: "a", Delete: true})
	if err != nil || rep.Done != 1 {
		t.Fatalf("a's own reap: %+v %v", rep, err)
	}
	if segmentsUnder(st, wa.SegmentPrefix()) != 0 || segmentsUnder(st, wb.SegmentPrefix()) != 3 {
		t.Errorf("after a's reap: x's old version %d segments, y's %d", segmentsUnder(st, wa.SegmentPrefix()), segmentsUnder(st, wb.SegmentPrefix()))
	}
	reap(t, b) // gc-style, every host's
	if segmentsUnder(st, wb.SegmentPrefix()) != 0 {
		t.Error("y's old version survived a reap of every host's records")
	}
}

package segments_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
)

// TestManifestBounds: manifests that reference themselves, nest too deep
// or fan out too wide are refused with a clear error, in bounded time, by
// the reader (Resolve) and by the versions' bookkeeping (Describe) alike.
func TestManifestBounds(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	lim := segments.DefaultLimits
	lim.MaxManifestSegments = 200_000
	st.SetLimits(lim)
	put := func(name string, data string) {
		t.Helper()
		if _, err := st.Put(ctx, "c", name, strings.NewReader(data), int64(len(data)), "", segments.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	slo := func(name string, refs ...string) {
		t.Helper()
		var es []segments.ManifestEntry
		for _, r := range refs {
			es = append(es, segments.ManifestEntry{Container: "c", Object: r})
		}
		if _, err := st.PutManifest(ctx, "c", name, es, segments.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put("leaf", "x")
	slo("b", "leaf")
	slo("a", "b")
	slo("b", "a") // a -> b -> a
	put("m0", "y")
	for i := 1; i <= 20; i++ {
		slo(fmt.Sprintf("m%d", i), fmt.Sprintf("m%d", i-1))
	}
	wide := make([]string, 100_001)
	for i := range wide {
		wide[i] = "leaf"
	}
	slo("wide", wide...)
	v := segments.NewVersions(st, segments.VersionsOptions{Container: "c"})
	for name, want := range map[string]string{"a": "references itself", "m20": "nested more than", "wide": "entries, more than"} {
		start := time.Now()
		_, _, err := segments.Resolve(ctx, st, "c", name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("resolve %s: %v, want %q", name, err, want)
		}
		in, _ := st.Head(ctx, "c", name)
		if _, err := v.Describe(ctx, in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("describe %s: %v, want %q", name, err, want)
		}
		// It can still be removed: the name goes, nothing it references is
		// recorded for deletion.
		if err := v.Remove(ctx, in); err != nil {
			t.Errorf("remove of %s: %v", name, err)
		}
		if _, err := st.Head(ctx, "c", name); !errors.Is(err, segments.ErrNotFound) {
			t.Errorf("%s after remove: %v", name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v", name, d)
		}
	}
	if _, _, err := segments.Resolve(ctx, st, "c", "m9"); err != nil {
		t.Errorf("9 levels are fine: %v", err)
	}
	if _, err := st.Head(ctx, "c", "leaf"); err != nil {
		t.Errorf("the leaf the broken manifests share: %v", err)
	}
}

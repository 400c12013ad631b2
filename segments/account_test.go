package segments_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

func TestAccountHidden(t *testing.T) {
	for name, want := range map[string]bool{
		"images": false, "images_segments": true, "_segments": true, ".imagefs": true,
		"glance_0b7c": false, "segments": false, "images_segments_x": false,
	} {
		if got := segments.Hidden(name); got != want {
			t.Errorf("Hidden(%q) = %v, want %v", name, got, want)
		}
	}
}

// leases lists the lease objects in a segment container.
func leases(st *segmentstest.Store, segc string) []string {
	var out []string
	for _, n := range st.Names(segc) {
		if strings.HasPrefix(n, ".imagefs/leases/") {
			out = append(out, n)
		}
	}
	return out
}

// TestAccount: the listing leaves segment containers out; a container's
// Container is made once; Run keeps the versions of containers used
// before and after it started (their leases are written); Close removes
// every lease.
func TestAccount(t *testing.T) {
	st := segmentstest.New()
	ctx := context.Background()
	for _, c := range []string{"a", "a_segments", "b", "glance_1", "orphan_segments"} {
		if err := st.CreateContainer(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	made := map[string]int{}
	acct := segments.NewAccount(segments.AccountOptions{Store: st, Container: func(name string) segments.ContainerOptions {
		made[name]++
		return segments.ContainerOptions{Store: st, Pool: segments.NewPool(mib, 1),
			Versions: segments.NewVersions(st, segments.VersionsOptions{Container: name, Host: "h-" + name, LeaseTTL: time.Hour})}
	}})
	var got []string
	if err := acct.List(ctx, func(name string) error { got = append(got, name); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b", "glance_1"}; !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	if ok, err := acct.Exists(ctx, "nope"); ok || err != nil {
		t.Errorf("Exists(nope) = %v, %v", ok, err)
	}
	if ok, err := acct.Exists(ctx, "b"); !ok || err != nil {
		t.Errorf("Exists(b) = %v, %v", ok, err)
	}

	a := acct.Container("a")
	if acct.Container("a") != a || a.Name() != "a" || made["a"] != 1 {
		t.Errorf("Container(a) made %d times, name %q", made["a"], a.Name())
	}
	ha := a.Versions().HoldPrefix("a_segments", "x/1/")
	defer ha.Release()

	run, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = acct.Run(run); close(done) }()
	b := acct.Container("b") // after Run started
	hb := b.Versions().HoldPrefix("b_segments", "y/1/")
	defer hb.Release()

	deadline := time.Now().Add(5 * time.Second)
	for len(leases(st, "a_segments")) == 0 || len(leases(st, "b_segments")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no leases written: a %q, b %q", leases(st, "a_segments"), leases(st, "b_segments"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	if err := acct.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if la, lb := leases(st, "a_segments"), leases(st, "b_segments"); len(la)+len(lb) != 0 {
		t.Errorf("leases left after Close: %q %q", la, lb)
	}
	if acct.Used() != 2 {
		t.Errorf("Used = %d, want 2", acct.Used())
	}
}

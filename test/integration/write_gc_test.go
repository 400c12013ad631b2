//go:build integration

package integration

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestWriteDaemonKilledThenGC: kill -9 of the daemon in the middle of an
// overwrite leaves the previous version intact; after a remount `imagefs gc`
// lists the dead upload's segments as orphans (and only them), and --delete
// removes them.
func TestWriteDaemonKilledThenGC(t *testing.T) {
	c := labtest.NewContainer(t)
	args := []string{"--segment-size", "4MiB"}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	old, oldSum := labtest.RandomFile(t, 10<<20, 11)
	labtest.RunCmd(t, "cp", old, d.Path("vm.img"))
	oldSegs := labtest.SegmentNames(t, c)
	if len(oldSegs) != 3 {
		t.Fatalf("the first version has %d segments, want 3: %v", len(oldSegs), oldSegs)
	}

	// Overwrite through a pipe the test controls, so the copy is surely
	// in the middle when the daemon dies.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cat := exec.Command("dd", "of="+d.Path("vm.img"), "bs=1M", "status=none")
	cat.Stdin = pr
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	newData, _ := labtest.RandomFile(t, 20<<20, 12)
	b, _ := os.ReadFile(newData)
	if _, err := pw.Write(b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "segments of the new upload in Swift", func() bool {
		return len(labtest.SegmentNames(t, c)) >= len(oldSegs)+3
	})
	d.Kill()
	pw.Close()
	_ = cat.Wait() // dd fails: the mount is gone

	d2 := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if got := labtest.SHA256File(t, d2.Path("vm.img")); got != oldSum {
		t.Fatal("the previous version was damaged by the killed upload")
	}
	var orphans []string
	for _, n := range labtest.SegmentNames(t, c) {
		if !slices.Contains(oldSegs, n) {
			orphans = append(orphans, n)
		}
	}
	if len(orphans) == 0 {
		t.Fatal("the killed upload left no segments: the test did not test anything")
	}

	// The dead daemon's lease still holds its upload (until its TTL, 6 s
	// here): even with --min-age 0s nothing is an orphan.
	r := labtest.Exec(t, "gc", "--min-age", "0s", c)
	if r.Code != 0 || !strings.Contains(r.Stdout, "no orphan segments") || !strings.Contains(r.Stdout, "retired or held") {
		t.Errorf("gc right after the crash: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	time.Sleep(7 * time.Second) // the lease dies
	// The default --min-age (a day) protects them: nothing is an orphan yet.
	r = labtest.Exec(t, "gc", c)
	if r.Code != 0 || !strings.Contains(r.Stdout, "no orphan segments") || !strings.Contains(r.Stdout, "young ") {
		t.Errorf("gc with the default --min-age: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	r = labtest.Exec(t, "gc", "--min-age", "0s", c)
	if r.Code != 0 {
		t.Fatalf("gc: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("gc --min-age 0s:\n%s", r.Stdout)
	upload := orphans[0][:strings.LastIndexByte(orphans[0], '/')+1]
	if !strings.Contains(r.Stdout, "orphan  "+c+"_segments/"+upload) || strings.Count(r.Stdout, "orphan  ") != 1 {
		t.Errorf("gc does not list exactly the upload %s as orphan:\n%s", upload, r.Stdout)
	}
	if got := labtest.SegmentNames(t, c); len(got) != len(oldSegs)+len(orphans) {
		t.Errorf("gc without --delete changed the segments: %v", got)
	}
	r = labtest.Exec(t, "gc", "--min-age", "0s", "--delete", c)
	if r.Code != 0 || !strings.Contains(r.Stdout, "deleted ") {
		t.Fatalf("gc --delete: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := labtest.SegmentNames(t, c); !slices.Equal(got, oldSegs) {
		t.Errorf("after gc --delete: %v, want the first version's %v", got, oldSegs)
	}
	if got := labtest.SHA256File(t, d2.Path("vm.img")); got != oldSum {
		t.Error("gc damaged the committed version")
	}
	r = labtest.Exec(t, "gc", "--min-age", "0s", c)
	if r.Code != 0 || !strings.Contains(r.Stdout, "no orphan segments") {
		t.Errorf("gc after --delete: status %d\n%s", r.Code, r.Stdout)
	}
}

// TestGCBadInput: operator mistakes give a clear message and a non-zero
// status, and change nothing.
func TestGCBadInput(t *testing.T) {
	c := labtest.NewContainer(t)
	for _, tc := range []struct {
		args   []string
		status int
		want   string
	}{
		{[]string{"gc"}, 2, "gc needs exactly one CONTAINER"},
		{[]string{"gc", "a", "b"}, 2, "gc needs exactly one CONTAINER"},
		{[]string{"gc", "--min-age", "yesterday", c}, 2, `invalid value "yesterday" for flag -min-age`},
		{[]string{"gc", "--min-age", "-1h", c}, 2, "--min-age -1h0m0s: must not be negative"},
		{[]string{"gc", c + "/prefix"}, 2, "is not a container name"},
		{[]string{"gc", "no-such-container-gc"}, 1, `container "no-such-container-gc" does not exist`},
	} {
		r := labtest.Exec(t, tc.args...)
		if r.Code != tc.status || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("imagefs %s: status %d, stderr %q; want status %d and %q", strings.Join(tc.args, " "), r.Code, r.Stderr, tc.status, tc.want)
		}
		if strings.Contains(r.Stderr, "goroutine ") || strings.Contains(r.Stderr, ".go:") {
			t.Errorf("imagefs %s: a stack trace: %s", strings.Join(tc.args, " "), r.Stderr)
		}
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

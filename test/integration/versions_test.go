//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// checkConsistent asserts what must hold of container c after any crash,
// restart and gc: every file the mount lists reads whole and is one of the
// contents allowed for its name; no object a manifest references is
// missing; gc finds no orphan.
func checkConsistent(t *testing.T, d *labtest.Daemon, c string, allowed map[string][]string) {
	t.Helper()
	ents, err := os.ReadDir(d.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		sum := labtest.SHA256File(t, d.Path(e.Name()))
		if !slices.Contains(allowed[e.Name()], sum) {
			t.Errorf("%s reads as %.12s, which is none of its versions", e.Name(), sum)
		}
	}
	for name, sums := range allowed {
		if !slices.Contains(names, name) && !slices.Contains(sums, "") {
			t.Errorf("%s is gone, but must exist", name)
		}
	}
	for _, n := range names {
		in, err := labtest.Swift.Head(t.Context(), c, n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := segments.ResolveInfo(t.Context(), labtest.Swift, in); err != nil {
			t.Errorf("%s references missing objects: %v", n, err)
		}
	}
	rep, err := segments.FindOrphans(t.Context(), labtest.Swift, segments.GCOptions{Container: c})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Orphans)+len(rep.Young) != 0 {
		t.Errorf("unreferenced uploads left after gc: %+v %+v", rep.Orphans, rep.Young)
	}
}

// gcAll runs gc --min-age 0s --delete and fails the test if it fails.
func gcAll(t *testing.T, c string) string {
	t.Helper()
	r := labtest.Exec(t, "gc", "--min-age", "0s", "--delete", c)
	if r.Code != 0 {
		t.Fatalf("gc: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// TestCrashAtEachFailpoint: the daemon is killed (SIGKILL, by itself) at
// each step of commit, rename, unlink and reap. After a restart, the
// leases' expiry and a gc, nothing any name references is gone, nothing
// unreferenced is left, and every name reads as one of its versions.
func TestCrashAtEachFailpoint(t *testing.T) {
	t.Parallel()
	for _, fp := range []string{"commit-after-retire", "commit-after-put", "rename-after-retire", "rename-after-copy",
		"unlink-after-retire", "reap-after-scan", "reap-after-delete"} {
		t.Run(fp, func(t *testing.T) {
			c := labtest.NewContainer(t)
			args := []string{"--segment-size", "1MiB"}
			d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
			v1, sum1 := labtest.RandomFile(t, 3<<20+1, 101)
			v2, sum2 := labtest.RandomFile(t, 2<<20+2, 102)
			labtest.RunCmd(t, "cp", v1, d.Path("x.img"))
			labtest.RunCmd(t, "cp", v2, d.Path("y.img"))
			d.Stop()
			allowed := map[string][]string{"x.img": {sum1}, "y.img": {sum2}}

			crash := labtest.Mount(t, c, labtest.MountOpts{Args: args, Env: []string{"IMAGEFS_FAILPOINT=" + fp}})
			switch {
			case strings.HasPrefix(fp, "commit"):
				_ = exec.Command("cp", v2, crash.Path("x.img")).Run()
				allowed["x.img"] = []string{sum1, sum2}
			case strings.HasPrefix(fp, "rename"):
				_ = os.Rename(crash.Path("x.img"), crash.Path("y.img"))
				allowed["x.img"] = []string{sum1, ""} // moved, or not yet
				allowed["y.img"] = []string{sum2, sum1}
			case strings.HasPrefix(fp, "unlink"):
				_ = os.Remove(crash.Path("x.img"))
				allowed["x.img"] = []string{sum1, ""}
			default: // the reaper of an overwrite's retirement
				labtest.RunCmd(t, "cp", v2, crash.Path("x.img"))
				allowed["x.img"] = []string{sum2}
			}
			select {
			case <-crash.Done:
			case <-time.After(30 * time.Second):
				t.Fatalf("the daemon did not reach the failpoint %s", fp)
			}
			crash.Kill()
			if !strings.Contains(crash.LogText(), "failpoint reached") {
				t.Fatalf("the daemon died, but not at the failpoint:\n%s", crash.LogText())
			}
			d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
			time.Sleep(7 * time.Second) // the dead daemon's lease expires (6 s here)
			t.Logf("gc:\n%s", gcAll(t, c))
			checkConsistent(t, d, c, allowed)
			// And once more after another reap and gc: still whole.
			time.Sleep(3 * time.Second)
			gcAll(t, c)
			checkConsistent(t, d, c, allowed)
		})
	}
}

// TestConcurrentWritersOneImage: two hosts write one image at once, round
// after round: host A replaces it (cp, O_TRUNC), host B appends to it
// (>>, which builds on the version it opened), with DELETEs slowed down.
// Whatever the interleaving, the image always reads whole as one version:
// A's, or some earlier whole version plus B's tail; and so after the
// reaps and a gc.
func TestConcurrentWritersOneImage(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	fp := labtest.NewFaultProxy(t)
	fp.SetFault(func(r *http.Request) labtest.Fault {
		if r.Method == http.MethodDelete || r.URL.Query().Has("bulk-delete") {
			return labtest.Fault{Delay: 300 * time.Millisecond}
		}
		return labtest.Fault{}
	})
	args := []string{"--os-storage-url", fp.StorageURL, "--segment-size", "1MiB"}
	a := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	b := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	first, _ := labtest.RandomFile(t, 3<<20, 110)
	labtest.RunCmd(t, "cp", first, a.Path("x.img"))
	firstData, _ := os.ReadFile(first)
	versions := [][]byte{firstData} // every content the image may have had
	for round := range 8 {
		src, _ := labtest.RandomFile(t, int64(2<<20+round*4096), uint64(111+round))
		aData, _ := os.ReadFile(src)
		tail := []byte(fmt.Sprintf("tail of round %d\n", round))
		var wg sync.WaitGroup
		wg.Go(func() { _ = exec.Command("cp", src, a.Path("x.img")).Run() })
		wg.Go(func() {
			f, err := os.OpenFile(b.Path("x.img"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return
			}
			_, _ = f.Write(tail)
			_ = f.Close()
		})
		wg.Wait()
		next := [][]byte{aData}
		for _, v := range versions {
			next = append(next, append(bytes.Clone(v), tail...))
		}
		versions = append(versions, next...)
		for _, m := range []*labtest.Daemon{a, b} {
			got, err := os.ReadFile(m.Path("x.img"))
			if err != nil {
				t.Fatalf("round %d: read through %s: %v", round, m.Dir, err)
			}
			if !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, got) }) {
				t.Fatalf("round %d: %s reads %d bytes that are no whole version", round, m.Dir, len(got))
			}
		}
	}
	fp.SetFault(nil)
	time.Sleep(4 * time.Second) // reaps of everything retired
	gcAll(t, c)
	got, err := os.ReadFile(a.Path("x.img"))
	if err != nil || !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, got) }) {
		t.Fatalf("after the reaps and gc: %d bytes, %v", len(got), err)
	}
	if got := labtest.SwiftDownloadSHA256(t, c, "x.img"); got != labtest.SHA256Bytes(mustRead(t, a.Path("x.img"))) {
		t.Error("Swift and the mount disagree")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestModelTwoHosts: a seeded random sequence of writes, appends,
// truncating overwrites, renames, unlinks, reads, remounts and daemon
// kills over two mounts of one container; every read is checked against
// a model of what the files hold.
func TestModelTwoHosts(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	args := labtest.MountOpts{Args: []string{"--segment-size", "1MiB", "--attr-ttl", "0s"}}
	hosts := []*labtest.Daemon{labtest.Mount(t, c, args), labtest.Mount(t, c, args)}
	r := rand.New(rand.NewPCG(7, 7))
	model := map[string][]byte{}
	names := []string{"a.img", "b.img", "c.img"}
	content := func(n int, seed uint64) []byte {
		rr := rand.New(rand.NewPCG(seed, seed))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rr.Uint32())
		}
		return b
	}
	for step := range 70 {
		i := r.IntN(2)
		h := hosts[i]
		name := names[r.IntN(len(names))]
		p := h.Path(name)
		switch op := r.IntN(9); {
		case op <= 1 || model[name] == nil: // a new version
			data := content(r.IntN(3<<20)+1, uint64(step))
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatalf("step %d: write %s: %v", step, name, err)
			}
			model[name] = data
		case op == 2: // append
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatalf("step %d: open %s to append: %v", step, name, err)
			}
			tail := content(r.IntN(100_000)+1, uint64(1000+step))
			if _, err := f.Write(tail); err != nil {
				t.Fatalf("step %d: append: %v", step, err)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("step %d: close after append: %v", step, err)
			}
			model[name] = append(bytes.Clone(model[name]), tail...)
		case op == 3: // rename
			dst := names[r.IntN(len(names))]
			if dst == name {
				continue
			}
			if err := os.Rename(p, h.Path(dst)); err != nil {
				t.Fatalf("step %d: mv %s %s: %v", step, name, dst, err)
			}
			model[dst], model[name] = model[name], nil
		case op == 4: // unlink
			if err := os.Remove(p); err != nil {
				t.Fatalf("step %d: rm %s: %v", step, name, err)
			}
			model[name] = nil
		case op == 5: // a host restarts, cleanly or killed
			if r.IntN(2) == 0 {
				h.Kill()
			} else {
				h.Stop()
			}
			hosts[i] = labtest.Mount(t, c, args)
		default: // read everything on both hosts
			for _, m := range hosts {
				for _, n := range names {
					got, err := os.ReadFile(m.Path(n))
					if model[n] == nil {
						if !os.IsNotExist(err) {
							t.Fatalf("step %d: %s on %s: %v, want ENOENT", step, n, m.Dir, err)
						}
						continue
					}
					if err != nil || !bytes.Equal(got, model[n]) {
						t.Fatalf("step %d: %s on %s: %d bytes (%v), the model has %d", step, n, m.Dir, len(got), err, len(model[n]))
					}
				}
			}
		}
	}
	time.Sleep(7 * time.Second) // dead leases expire, reaps run
	gcAll(t, c)
	allowed := map[string][]string{}
	for n, data := range model {
		if data != nil {
			allowed[n] = []string{labtest.SHA256Bytes(data)}
		}
	}
	checkConsistent(t, hosts[0], c, allowed)
	var left []string
	for _, s := range labtest.SegmentNames(t, c) {
		left = append(left, s)
	}
	sort.Strings(left)
	t.Logf("%d segments left for %d files", len(left), len(allowed))
}

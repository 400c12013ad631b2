//go:build integration

package integration

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// unitArgs are the flags of systemd/imagefs@.service's ExecStart.
var unitArgs = []string{"--allow-other", "--log-format", "json"}

// asUser runs a shell script as uid and gid 65534 (nobody), returning its
// combined output and error.
func asUser(t *testing.T, script string) (string, error) {
	t.Helper()
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script).CombinedOutput()
	return string(out), err
}

// TestSharedHostOtherUsers: on a mount made with the unit's flags another
// local user may read and list, and nothing else: writing, creating,
// truncating, renaming, removing and mkdir are refused by the kernel, and
// Swift is unchanged. With --file-mode/--dir-mode that leave others out,
// they cannot even read.
func TestSharedHostOtherUsers(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: unitArgs})
	labtest.MakeReachable(t, d.Dir)
	src, sum := labtest.RandomFile(t, 3<<20, 91)
	labtest.RunCmd(t, "cp", src, d.Path("victim.img"))
	if err := os.Mkdir(d.Path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	labtest.RunCmd(t, "cp", src, d.Path("dir/other.img"))

	if out, err := asUser(t, "sha256sum "+d.Path("victim.img")+" && ls "+d.Dir); err != nil || !strings.Contains(out, sum) {
		t.Fatalf("read as another user: %v: %s", err, out)
	}
	v := d.Path("victim.img")
	for _, script := range []string{
		"echo pwned > " + v,
		"echo pwned >> " + v,
		"echo new > " + d.Path("new.img"),
		"truncate -s 0 " + v,
		"rm -f " + v,
		"mv " + v + " " + d.Path("moved.img"),
		"mkdir " + d.Path("newdir"),
		"rm -f " + d.Path("dir/other.img"),
		"chmod 0666 " + v,
		"setfattr -n user.x -v 1 " + v,
	} {
		out, err := asUser(t, script)
		if err == nil || !(strings.Contains(out, "ermission denied") || strings.Contains(out, "ot permitted")) {
			t.Errorf("%q as another user: %v: %s (want it refused)", script, err, out)
		}
	}
	if got := labtest.SwiftDownloadSHA256(t, c, "victim.img"); got != sum {
		t.Errorf("victim.img in Swift changed")
	}
	var names []string
	_ = labtest.Swift.List(t.Context(), c, "", 0, func(in segments.Info) error { names = append(names, in.Name); return nil })
	if got, want := strings.Join(names, " "), "dir/ dir/other.img victim.img"; got != want {
		t.Errorf("container: %q, want %q", got, want)
	}
	if strings.Contains(d.LogText(), `"level":"ERROR"`) {
		t.Errorf("errors in the log:\n%s", d.LogText())
	}

	private := labtest.Mount(t, c, labtest.MountOpts{Args: append(slices.Clone(unitArgs), "--file-mode", "0640", "--dir-mode", "0750")})
	labtest.MakeReachable(t, private.Dir)
	if out, err := asUser(t, "cat "+private.Path("victim.img")+" >/dev/null"); err == nil || !strings.Contains(out, "ermission denied") {
		t.Errorf("read of a 0640 file as another user: %v: %s", err, out)
	}
	if out, err := asUser(t, "ls "+private.Dir); err == nil || !strings.Contains(out, "ermission denied") {
		t.Errorf("ls of a 0750 directory as another user: %v: %s", err, out)
	}
	st, err := os.Stat(private.Path("victim.img"))
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("stat: %v %v", st, err)
	}
}

// TestRenameNamesAreExact: right after mv the new name reads the moved
// image and a write to it reaches the object of the new name, whatever the
// attribute TTL; an open file follows its rename; a rename over a file a
// local reader has open keeps that reader's version until it closes.
func TestRenameNamesAreExact(t *testing.T) {
	t.Parallel()
	for _, ttl := range []string{"1s", "1m"} {
		t.Run("attr-ttl="+ttl, func(t *testing.T) {
			c := labtest.NewContainer(t)
			d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--attr-ttl", ttl, "--segment-size", "1MiB"}})
			aSrc, aSum := labtest.RandomFile(t, 3<<20+5, 81)
			labtest.RunCmd(t, "cp", aSrc, d.Path("a.img"))
			if err := os.WriteFile(d.Path("b.img"), []byte("old b"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"a.img", "b.img"} { // the kernel knows both
				if _, err := os.Stat(d.Path(n)); err != nil {
					t.Fatal(err)
				}
			}
			labtest.RunCmd(t, "mv", d.Path("a.img"), d.Path("b.img"))
			if got := labtest.SHA256File(t, d.Path("b.img")); got != aSum {
				t.Fatal("cat of the new name right after mv is not the moved image")
			}
			if err := os.WriteFile(d.Path("b.img"), []byte("two"), 0o644); err != nil {
				t.Fatalf("write to the new name: %v", err)
			}
			if got, err := os.ReadFile(d.Path("b.img")); err != nil || string(got) != "two" {
				t.Fatalf("read after writing the new name: %q %v", got, err)
			}
			if _, err := labtest.Swift.Head(t.Context(), c, "a.img"); !errors.Is(err, segments.ErrNotFound) {
				t.Errorf("a.img in Swift after mv and a write to b.img: %v", err)
			}
			rc, err := labtest.Swift.Get(t.Context(), c, "b.img", 0, -1, "")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if string(got) != "two" {
				t.Errorf("b.img in Swift: %q", got)
			}

			// An open file follows its rename.
			labtest.RunCmd(t, "cp", aSrc, d.Path("c.img"))
			f, err := os.Open(d.Path("c.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			labtest.RunCmd(t, "mv", d.Path("c.img"), d.Path("d.img"))
			all, err := io.ReadAll(f)
			if err != nil || labtest.SHA256Bytes(all) != aSum {
				t.Errorf("the open file after mv: %v", err)
			}
			if got := labtest.SHA256File(t, d.Path("d.img")); got != aSum {
				t.Errorf("the new name of the open file")
			}

			// A rename over a file a local reader has open. The same size:
			// the kernel clamps every handle's reads to the file's size.
			oldSrc, oldSum := labtest.RandomFile(t, 3<<20+5, 82)
			labtest.RunCmd(t, "cp", oldSrc, d.Path("dst.img"))
			oldSegs := labtest.SegmentNames(t, c)
			rd, err := os.Open(d.Path("dst.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			head := make([]byte, 1<<20)
			if _, err := io.ReadFull(rd, head); err != nil {
				t.Fatal(err)
			}
			labtest.RunCmd(t, "mv", d.Path("d.img"), d.Path("dst.img"))
			time.Sleep(4 * time.Second) // past the grace period (2 s) and a reap
			rest, err := io.ReadAll(rd)
			if err != nil || labtest.SHA256Bytes(append(head, rest...)) != oldSum {
				t.Fatalf("the reader of the replaced dst.img: %v, %d bytes", err, len(head)+len(rest))
			}
			rd.Close()
			if got := labtest.SHA256File(t, d.Path("dst.img")); got != aSum {
				t.Error("dst.img after the rename over it")
			}
			waitFor(t, 30*time.Second, "the replaced dst.img to be reaped once its reader closed", func() bool {
				return !slices.ContainsFunc(labtest.SegmentNames(t, c), func(n string) bool {
					return strings.HasPrefix(n, "dst.img/") && slices.Contains(oldSegs, n)
				})
			})
		})
	}
}

// TestRemoveDeletesOnlyWhatItOwns: rm of a DLO whose prefix points into
// another container, and of one whose prefix covers visible files, removes
// the manifest only (and says so); rm of a Glance image removes its parts
// too; nothing else is ever touched.
func TestRemoveDeletesOnlyWhatItOwns(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	other := labtest.NewContainer(t)
	labtest.PutObject(t, other, "k/keep.img", []byte("keep"), nil)
	labtest.PutObject(t, other, "k/kernel.img", []byte("kernel"), nil)
	labtest.PutObject(t, c, "imgs/a.img", []byte("visible a"), nil)
	labtest.PutObject(t, c, "imgs/b.img", []byte("visible b"), nil)
	putDLO := func(name, manifest string) {
		t.Helper()
		if _, err := labtest.Swift.Put(t.Context(), c, name, bytes.NewReader(nil), 0, "", segments.PutOptions{DLO: manifest}); err != nil {
			t.Fatal(err)
		}
	}
	putDLO("into-other.img", other+"/k/")
	putDLO("over-visible.img", c+"/imgs/")
	const uuid = "5e1b2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
	p := labtest.Pattern{Seed: 83, Size: 3*1_000_003 + 17}
	labtest.PutGlanceDLO(t, c, uuid, p, p.Size, 1_000_003)
	d := labtest.Mount(t, c, labtest.MountOpts{})

	for _, n := range []string{"into-other.img", "over-visible.img", uuid} {
		if err := os.Remove(d.Path(n)); err != nil {
			t.Fatalf("rm %s: %v", n, err)
		}
	}
	waitFor(t, 30*time.Second, "the Glance image's parts to be reaped", func() bool {
		n := 0
		_ = labtest.Swift.List(t.Context(), c, uuid, 0, func(segments.Info) error { n++; return nil })
		return n == 0
	})
	time.Sleep(2 * time.Second) // another reap or two
	for cn, want := range map[string]string{other: "k/keep.img k/kernel.img", c: "imgs/a.img imgs/b.img"} {
		var names []string
		_ = labtest.Swift.List(t.Context(), cn, "", 0, func(in segments.Info) error { names = append(names, in.Name); return nil })
		if got := strings.Join(names, " "); got != want {
			t.Errorf("container %s: %q, want %q", cn, got, want)
		}
	}
	for _, n := range []string{"imgs/a.img", "imgs/b.img"} {
		if got, err := os.ReadFile(d.Path(n)); err != nil || !strings.HasPrefix(string(got), "visible") {
			t.Errorf("%s after the rm: %q %v", n, got, err)
		}
	}
	if log := d.LogText(); strings.Count(log, "references lie outside what it owns") != 2 {
		t.Errorf("the log does not say twice that objects outside were kept:\n%s", log)
	}
}

// TestNoGraftOntoGlanceImage: a name under a Glance image's prefix
// ("<uuid>-notes.txt") cannot be created or renamed onto; the image keeps
// its size and SHA-256 (as Swift serves it too); its parts are hidden from
// lookups.
func TestNoGraftOntoGlanceImage(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	const uuid = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
	p := labtest.Pattern{Seed: 84, Size: 2*2_000_003 + 99}
	labtest.PutGlanceDLO(t, c, uuid, p, p.Size, 2_000_003)
	d := labtest.Mount(t, c, labtest.MountOpts{})
	if err := os.WriteFile(d.Path(uuid+"-notes.txt"), []byte("notes"), 0o644); !errors.Is(err, syscall.EPERM) {
		t.Errorf("create %s-notes.txt: %v, want EPERM", uuid, err)
	}
	if err := os.WriteFile(d.Path("elsewhere.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(d.Path("elsewhere.txt"), d.Path(uuid+"-x")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("rename onto %s-x: %v, want EPERM", uuid, err)
	}
	if _, err := os.Stat(d.Path(uuid + "-00001")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a part: %v, want ENOENT", err)
	}
	st, err := os.Stat(d.Path(uuid))
	if err != nil || st.Size() != p.Size {
		t.Fatalf("the image: %v %v", st, err)
	}
	if got := labtest.SHA256File(t, d.Path(uuid)); got != p.SHA256() {
		t.Error("the image's content changed through the mount")
	}
	if got := labtest.SwiftDownloadSHA256(t, c, uuid); got != p.SHA256() {
		t.Error("the image's content changed in Swift")
	}
	if !strings.Contains(d.LogText(), "would become part of that image") {
		t.Error("the log does not say why the name was refused")
	}
}

// TestRenameCrashSafe: a rename stopped between its copy and its delete
// (the DELETE fails; or the daemon is killed right after the COPY) leaves
// both names; removing either one leaves the other readable, also after
// the reaps and gc; removing both frees every segment.
func TestRenameCrashSafe(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"delete-fails", "killed-after-copy"} {
		t.Run(how, func(t *testing.T) {
			for _, removed := range []string{"a.img", "b.img"} {
				t.Run("rm-"+removed, func(t *testing.T) {
					c := labtest.NewContainer(t)
					fp := labtest.NewFaultProxy(t)
					args := []string{"--os-storage-url", fp.StorageURL, "--segment-size", "1MiB", "--retry-budget", "2s"}
					d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
					src, sum := labtest.RandomFile(t, 3<<20+11, 85)
					labtest.RunCmd(t, "cp", src, d.Path("a.img"))
					if how == "delete-fails" {
						fp.SetRule(func(r *http.Request) (int, bool) {
							return http.StatusServiceUnavailable, r.Method == http.MethodDelete && strings.HasSuffix(r.URL.Path, "/a.img")
						})
						if err := os.Rename(d.Path("a.img"), d.Path("b.img")); err == nil {
							t.Fatal("mv succeeded although its DELETE failed")
						}
						fp.SetRule(nil)
					} else {
						d.Stop()
						d = labtest.Mount(t, c, labtest.MountOpts{Args: args, Env: []string{"IMAGEFS_FAILPOINT=rename-after-copy"}})
						_ = os.Rename(d.Path("a.img"), d.Path("b.img")) // the daemon dies
						<-d.Done
						d.Kill()
						if !strings.Contains(d.LogText(), "failpoint reached") {
							t.Fatal("the daemon did not stop at the failpoint")
						}
						d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
					}
					for _, n := range []string{"a.img", "b.img"} {
						if got := labtest.SHA256File(t, d.Path(n)); got != sum {
							t.Fatalf("%s after the broken rename", n)
						}
					}
					kept := map[string]string{"a.img": "b.img", "b.img": "a.img"}[removed]
					labtest.RunCmd(t, "rm", d.Path(removed))
					time.Sleep(8 * time.Second) // grace (2 s), reaps (1 s), a dead lease (6 s)
					if r := labtest.Exec(t, "gc", "--min-age", "0s", "--delete", c); r.Code != 0 {
						t.Fatalf("gc: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
					}
					if got := labtest.SHA256File(t, d.Path(kept)); got != sum {
						t.Fatalf("%s after removing %s, the reaps and gc", kept, removed)
					}
					if got := labtest.SwiftDownloadSHA256(t, c, kept); got != sum {
						t.Fatalf("%s in Swift after removing %s", kept, removed)
					}
					labtest.RunCmd(t, "rm", d.Path(kept))
					waitFor(t, 30*time.Second, "every segment to be reaped once both names are gone", func() bool {
						return len(labtest.SegmentNames(t, c)) == 0
					})
				})
			}
		})
	}
}

// TestUnlinkDoesNotStall: rm of a large image returns once its name is
// gone; with DELETEs slowed down, it takes one slow DELETE (not one per
// segment), and a stat of another image in the same directory is not held
// up meanwhile. The segments go later, in the background.
func TestUnlinkDoesNotStall(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	fp := labtest.NewFaultProxy(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL, "--segment-size", "1MiB"}})
	src, _ := labtest.RandomFile(t, 48<<20, 86)
	labtest.RunCmd(t, "cp", src, d.Path("big.img"))
	labtest.RunCmd(t, "cp", src, d.Path("other.img"))
	if _, err := os.Stat(d.Path("other.img")); err != nil {
		t.Fatal(err)
	}
	const slow = 2 * time.Second
	fp.SetFault(func(r *http.Request) labtest.Fault {
		if r.Method == http.MethodDelete || r.URL.Query().Has("bulk-delete") {
			return labtest.Fault{Delay: slow}
		}
		return labtest.Fault{}
	})
	time.Sleep(1100 * time.Millisecond) // other.img's attributes expire: the stat asks the daemon
	rmDone := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		_ = os.Remove(d.Path("big.img"))
		rmDone <- time.Since(start)
	}()
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	if _, err := os.Stat(d.Path("other.img")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 500*time.Millisecond {
		t.Errorf("stat of another image took %v during a slow rm", took)
	}
	took := <-rmDone
	if took > 3*slow {
		t.Errorf("rm took %v with DELETEs delayed %v: it waits for more than the name", took, slow)
	}
	if _, err := os.Stat(d.Path("big.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("big.img after rm: %v", err)
	}
	fp.SetFault(nil)
	waitFor(t, 60*time.Second, "big.img's segments to be reaped", func() bool {
		return !slices.ContainsFunc(labtest.SegmentNames(t, c), func(n string) bool { return strings.HasPrefix(n, "big.img/") })
	})
	if got := labtest.SHA256File(t, d.Path("other.img")); got != labtest.SHA256File(t, src) {
		t.Error("other.img changed")
	}
}

//go:build integration

package integration

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestWriteKilledWriterKeepsOldVersion: a cp killed (Ctrl-C, kill -9) in
// the middle of an overwrite leaves the previous version, not half an
// image, and its upload's segments are deleted.
func TestWriteKilledWriterKeepsOldVersion(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "4MiB"}})
	old, oldSum := labtest.RandomFile(t, 10<<20, 41)
	labtest.RunCmd(t, "cp", old, d.Path("vm.img"))
	oldSegs := labtest.SegmentNames(t, c)
	newData, err := os.ReadFile(must(labtest.RandomFile(t, 20<<20, 42)))
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			// cp reads a pipe the test feeds, so it is surely in the
			// middle of the copy when the signal comes.
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cp := exec.Command("cp", "/dev/stdin", d.Path("vm.img"))
			cp.Stdin = pr
			if err := cp.Start(); err != nil {
				t.Fatal(err)
			}
			pr.Close()
			if _, err := pw.Write(newData); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, "cp to have written 20 MiB", func() bool {
				st, err := os.Stat(d.Path("vm.img"))
				return err == nil && st.Size() >= 20<<20
			})
			if err := cp.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err = cp.Wait()
			pw.Close()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != sig {
				t.Fatalf("cp did not die of %v: %v", sig, err)
			}
			if got := labtest.SHA256File(t, d.Path("vm.img")); got != oldSum {
				st, _ := os.Stat(d.Path("vm.img"))
				in, err := labtest.Swift.Head(t.Context(), c, "vm.img")
				t.Errorf("the killed copy replaced the previous version: stat size %d, swift %+v %v", st.Size(), in, err)
			}
			if got := labtest.SwiftDownloadSHA256(t, c, "vm.img"); got != oldSum {
				t.Error("Swift does not have the previous version")
			}
			waitFor(t, 10*time.Second, "the abandoned upload's segments to be deleted", func() bool {
				got := labtest.SegmentNames(t, c)
				if !slices.Equal(got, oldSegs) {
					t.Logf("segments: %v", got)
					return false
				}
				return true
			})
			if !strings.Contains(d.LogText(), "writer killed by a signal") {
				t.Error("the log does not say why the upload was abandoned")
			}
		})
	}
}

// TestWriteFsync: fsync uploads everything written so far and waits: the
// segments are in Swift before close; writing goes on after it.
func TestWriteFsync(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "4MiB"}})
	data, err := os.ReadFile(must(labtest.RandomFile(t, 30<<20, 51)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(d.Path("synced.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const first = 10<<20 + 100 // not a multiple of the segment size
	if _, err := f.Write(data[:first]); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	var stored int64
	for _, in := range labtest.SegmentInfos(t, c) {
		stored += in.Size
	}
	if stored != first {
		t.Errorf("after fsync Swift holds %d bytes of segments, want %d", stored, first)
	}
	if _, err := labtest.Swift.Head(t.Context(), c, "synced.img"); err == nil {
		t.Error("fsync published the file: only close does")
	}
	if _, err := f.Write(data[first:]); err != nil {
		t.Fatalf("write after fsync: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	got, err := os.ReadFile(d.Path("synced.img"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content after fsync and close differs (%v)", err)
	}
}

// TestWriteOverwriteWhileReading: host A overwrites an image that a reader
// on host A and a reader on host B (another mount, its own process and
// cache) have open. Neither the daemons' reapers nor `imagefs gc --delete`
// with a short --min-age delete the old version while either holds it;
// both read the whole old version, byte for byte; once both have closed
// and the grace period is over, the old segments go; the new version is
// what both hosts then open.
func TestWriteOverwriteWhileReading(t *testing.T) {
	c := labtest.NewContainer(t)
	args := labtest.MountOpts{Args: []string{"--segment-size", "4MiB", "--read-ahead", "1MiB", "--read-memory", "16MiB"}}
	d := labtest.Mount(t, c, args)
	other := labtest.Mount(t, c, args) // another host
	const size = 48 << 20
	oldData, err := os.ReadFile(must(labtest.RandomFile(t, size, 61)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Path("vm.img"), oldData, 0o644); err != nil {
		t.Fatal(err)
	}
	oldSegs := labtest.SegmentNames(t, c)

	here, err := os.Open(d.Path("vm.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	there, err := os.Open(other.Path("vm.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer there.Close()
	buf := make([]byte, 1<<20)
	for _, f := range []*os.File{here, there} {
		if _, err := io.ReadFull(f, buf); err != nil || !bytes.Equal(buf, oldData[:1<<20]) {
			t.Fatalf("first read: %v", err)
		}
	}

	// The same size, so that the kernel does not clamp the old readers.
	newSrc, newSum := labtest.RandomFile(t, size, 62)
	labtest.RunCmd(t, "cp", newSrc, d.Path("vm.img"))
	if got := labtest.SwiftDownloadSHA256(t, c, "vm.img"); got != newSum {
		t.Fatal("the overwrite is not in Swift")
	}
	oldLeft := func() int {
		n := 0
		for _, s := range labtest.SegmentNames(t, c) {
			if slices.Contains(oldSegs, s) {
				n++
			}
		}
		return n
	}
	time.Sleep(3 * time.Second) // past the mounts' 2 s grace; their reapers run every second
	r := labtest.Exec(t, "gc", "--min-age", "1s", "--delete", c)
	if r.Code != 0 {
		t.Fatalf("gc: status %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("gc while both hosts read the old version:\n%s", r.Stdout)
	if n := oldLeft(); n != len(oldSegs) {
		t.Fatalf("%d of the old version's %d segments deleted while two hosts have it open", len(oldSegs)-n, len(oldSegs))
	}
	for name, f := range map[string]*os.File{"host A": here, "host B": there} {
		rest, err := io.ReadAll(f)
		if err != nil {
			t.Fatalf("%s, reading the old version after the overwrite: %v", name, err)
		}
		if !bytes.Equal(rest, oldData[1<<20:]) {
			t.Fatalf("%s read %d bytes that are not the old version's", name, len(rest))
		}
	}
	here.Close()
	time.Sleep(3 * time.Second)
	if n := oldLeft(); n != len(oldSegs) {
		t.Fatalf("%d old segments deleted while host B still has the old version open", len(oldSegs)-n)
	}
	there.Close()
	waitFor(t, 30*time.Second, "the old segments to be deleted after both readers closed", func() bool { return oldLeft() == 0 })
	for _, m := range []*labtest.Daemon{d, other} {
		if got := labtest.SHA256File(t, m.Path("vm.img")); got != newSum {
			t.Errorf("%s: a new open does not see the new version", m.Dir)
		}
	}
	if r := labtest.Exec(t, "gc", "--min-age", "0s", c); r.Code != 0 || !strings.Contains(r.Stdout, "no orphan segments") {
		t.Errorf("gc afterwards: status %d\n%s", r.Code, r.Stdout)
	}
}

//go:build integration

package integration

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

func TestListAndStat(t *testing.T) {
	c := labtest.NewContainer(t)
	labtest.PutObject(t, c, "top.img", []byte("hello imagefs"), map[string]string{"mtime": "1600000000.250000"})
	labtest.PutObject(t, c, "images/a.qcow2", bytes.Repeat([]byte("a"), 4096), nil)
	labtest.PutObject(t, c, "images/deep/b.raw", []byte("b"), nil)
	labtest.PutObject(t, c, "marker/", nil, nil)
	d := labtest.Mount(t, c, labtest.MountOpts{})

	ls := func(p string) string {
		ents, err := os.ReadDir(d.Path(p))
		if err != nil {
			t.Fatalf("ls %s: %v", p, err)
		}
		var names []string
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() {
				n += "/"
			}
			names = append(names, n)
		}
		sort.Strings(names)
		return strings.Join(names, " ")
	}
	// A stat by name shows the stored mtime (X-Object-Meta-Mtime); after
	// a listing, within --list-ttl, the listing's time (README: Large
	// directories).
	st, err := os.Stat(d.Path("top.img"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 13 || st.ModTime().Unix() != 1600000000 || st.IsDir() {
		t.Errorf("stat top.img: size %d, mtime %v", st.Size(), st.ModTime())
	}
	if got, want := ls(""), "images/ marker/ top.img"; got != want {
		t.Errorf("ls / = %q, want %q", got, want)
	}
	if got, want := ls("images"), "a.qcow2 deep/"; got != want {
		t.Errorf("ls /images = %q, want %q", got, want)
	}
	st, err = os.Stat(d.Path("images/a.qcow2"))
	if err != nil || st.Size() != 4096 {
		t.Fatalf("stat images/a.qcow2: %v %v", st, err)
	}
	// No Mtime metadata: Swift's Last-Modified, which is recent.
	if age := time.Since(st.ModTime()); age < -2*time.Second || age > 10*time.Minute {
		t.Errorf("mtime of a.qcow2 is %v old", age)
	}
	if st, err := os.Stat(d.Path("images/deep")); err != nil || !st.IsDir() {
		t.Errorf("stat images/deep: %v %v", st, err)
	}
	if _, err := os.Stat(d.Path("missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat missing: %v", err)
	}
	// `ls -l` through the real tool, as an operator would.
	out := labtest.RunCmd(t, "ls", "-l", d.Path("images"))
	if !strings.Contains(out, "4096") || !strings.Contains(out, "a.qcow2") {
		t.Errorf("ls -l: %s", out)
	}
}

func TestCatAndDdAreRangedReads(t *testing.T) {
	c := labtest.NewContainer(t)
	src, sum := labtest.RandomFile(t, 10<<20+333, 1)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	labtest.PutObject(t, c, "disk.raw", data, nil)
	d := labtest.Mount(t, c, labtest.MountOpts{})

	if got := labtest.SHA256File(t, d.Path("disk.raw")); got != sum {
		t.Fatalf("sha256 through the mount %s, want %s", got, sum)
	}
	out := filepath.Join(t.TempDir(), "part")
	labtest.RunCmd(t, "dd", "if="+d.Path("disk.raw"), "of="+out, "bs=4096", "skip=1000", "count=300", "status=none")
	part, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(part, data[4096*1000:4096*1300]) {
		t.Error("dd skip/count read the wrong bytes")
	}
	catOut, err := exec.Command("cat", d.Path("disk.raw")).Output()
	if err != nil || !bytes.Equal(catOut, data) {
		t.Errorf("cat: %v, %d bytes", err, len(catOut))
	}
}

// TestCopyLargeFile is the acceptance test of the walking skeleton: a
// 300 MiB file copied in is an SLO, and reads back identically through the
// mount and through the swift CLI.
func TestCopyLargeFile(t *testing.T) {
	c := labtest.NewContainer(t)
	src, sum := labtest.RandomFile(t, 300<<20, 2)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "32MiB"}})
	labtest.RunCmd(t, "cp", src, d.Path("big.img"))

	st, err := os.Stat(d.Path("big.img"))
	if err != nil || st.Size() != 300<<20 {
		t.Fatalf("stat after cp: %v %v", st, err)
	}
	if got := labtest.SHA256File(t, d.Path("big.img")); got != sum {
		t.Errorf("sha256 through the mount %s, want %s", got, sum)
	}
	dl := filepath.Join(t.TempDir(), "download")
	labtest.RunCmd(t, "swift", "download", c, "big.img", "-o", dl)
	if got := labtest.SHA256File(t, dl); got != sum {
		t.Errorf("sha256 through swift download %s, want %s", got, sum)
	}
	stat := labtest.RunCmd(t, "swift", "stat", c, "big.img")
	if !strings.Contains(stat, "X-Static-Large-Object: True") {
		t.Errorf("swift stat does not show an SLO manifest:\n%s", stat)
	}
	in, err := labtest.Swift.Head(t.Context(), c, "big.img")
	if err != nil {
		t.Fatal(err)
	}
	if in.Meta["sha256"] != sum {
		t.Errorf("X-Object-Meta-Sha256 = %q, want %q", in.Meta["sha256"], sum)
	}
	// Segments are hidden from the mount.
	ents, _ := os.ReadDir(d.Dir)
	if len(ents) != 1 {
		t.Errorf("mount shows %d entries, want only big.img", len(ents))
	}
}

func TestCopySmallFileIsOneObject(t *testing.T) {
	c := labtest.NewContainer(t)
	src, sum := labtest.RandomFile(t, 100<<10, 3)
	d := labtest.Mount(t, c, labtest.MountOpts{})
	labtest.RunCmd(t, "cp", src, d.Path("small.img"))
	in, err := labtest.Swift.Head(t.Context(), c, "small.img")
	if err != nil {
		t.Fatal(err)
	}
	if in.SLO || in.DLO != "" || in.Size != 100<<10 {
		t.Errorf("small file stored as %+v", in)
	}
	if got := labtest.SHA256File(t, d.Path("small.img")); got != sum {
		t.Error("content differs")
	}
	if _, err := labtest.Swift.HeadContainer(t.Context(), c+"_segments"); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("a small file created the segment container (%v)", err)
	}
}

// TestCloseReportsUploadFailure: when Swift keeps failing the segment
// uploads, cp fails (close returns the error), nothing becomes visible and
// the previous version stays intact.
func TestCloseReportsUploadFailure(t *testing.T) {
	c := labtest.NewContainer(t)
	labtest.PutObject(t, c, "vm.img", []byte("previous version"), nil)
	fp := labtest.NewFaultProxy(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL, "--retry-budget", "3s", "--segment-size", "8MiB"}})
	fp.SetRule(func(r *http.Request) (int, bool) { return http.StatusServiceUnavailable, labtest.IsSegmentPut(r) })

	src, _ := labtest.RandomFile(t, 40<<20, 4)
	out, err := exec.Command("cp", src, d.Path("vm.img")).CombinedOutput()
	if err == nil {
		t.Fatalf("cp succeeded although every segment upload failed: %s", out)
	}
	if !strings.Contains(string(out), "Input/output error") {
		t.Errorf("cp said: %s", out)
	}
	if fp.Faults.Load() == 0 {
		t.Error("the fault proxy injected nothing")
	}
	fp.SetRule(nil)
	rc, err := labtest.Swift.Get(t.Context(), c, "vm.img", 0, -1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.ReadFrom(rc)
	if buf.String() != "previous version" {
		t.Errorf("previous version damaged: %q", buf.String())
	}
	if !strings.Contains(d.LogText(), "segment upload failed") {
		t.Error("the failure is not in the log")
	}
}

func TestRemoveMkdirRmdir(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "1MiB"}})
	labtest.RunCmd(t, "mkdir", d.Path("dir"))
	if in, err := labtest.Swift.Head(t.Context(), c, "dir/"); err != nil || in.ContentType != "application/directory" {
		t.Errorf("mkdir made %+v, %v", in, err)
	}
	src, _ := labtest.RandomFile(t, 3<<20+5, 5) // an SLO of 4 segments
	labtest.RunCmd(t, "cp", src, d.Path("dir/f.img"))
	if out, err := exec.Command("rmdir", d.Path("dir")).CombinedOutput(); err == nil || !strings.Contains(string(out), "not empty") {
		t.Errorf("rmdir of a full directory: %v %s", err, out)
	}
	labtest.RunCmd(t, "rm", d.Path("dir/f.img"))
	if _, err := os.Stat(d.Path("dir/f.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still there after rm: %v", err)
	}
	labtest.RunCmd(t, "rmdir", d.Path("dir"))
	// The segments go at the reap after the grace period (2 s here), with
	// the retirement record; the lease once the writer's hold stops
	// lingering.
	var left []string
	waitFor(t, 30*time.Second, "nothing left in Swift after rm and rmdir", func() bool {
		left = nil
		for _, cn := range []string{c, c + "_segments"} {
			_ = labtest.Swift.List(t.Context(), cn, "", 0, func(in segments.Info) error { left = append(left, cn+"/"+in.Name); return nil })
		}
		return len(left) == 0
	})
}

// TestUnmountOnSignalsAndUmount: SIGINT, SIGTERM and umount all end the
// daemon with status 0 and the mount gone.
func TestUnmountOnSignalsAndUmount(t *testing.T) {
	c := labtest.NewContainer(t)
	for _, how := range []string{"SIGINT", "SIGTERM", "umount"} {
		t.Run(how, func(t *testing.T) {
			d := labtest.Mount(t, c, labtest.MountOpts{})
			switch how {
			case "SIGINT":
				d.Cmd.Process.Signal(syscall.SIGINT)
			case "SIGTERM":
				d.Cmd.Process.Signal(syscall.SIGTERM)
			case "umount":
				labtest.RunCmd(t, "umount", d.Dir)
			}
			select {
			case <-d.Done:
			case <-time.After(30 * time.Second):
				t.Fatal("imagefs did not exit")
			}
			d.Stop() // checks exit status 0 and that nothing is mounted
		})
	}
}

func TestMountPrefix(t *testing.T) {
	c := labtest.NewContainer(t)
	labtest.PutObject(t, c, "tenant-a/one.img", []byte("1"), nil)
	labtest.PutObject(t, c, "tenant-b/two.img", []byte("2"), nil)
	d := labtest.Mount(t, c+"/tenant-a", labtest.MountOpts{})
	ents, err := os.ReadDir(d.Dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "one.img" {
		t.Fatalf("ls of the prefix mount: %v %v", ents, err)
	}
	if err := os.WriteFile(d.Path("new.img"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := labtest.Swift.Head(t.Context(), c, "tenant-a/new.img"); err != nil {
		t.Errorf("written below the prefix? %v", err)
	}
	_ = fmt.Sprint()
}

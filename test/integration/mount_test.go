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
)

func TestListAndStat(t *testing.T) {
	c := newContainer(t)
	putObject(t, c, "top.img", []byte("hello imagefs"), map[string]string{"mtime": "1600000000.250000"})
	putObject(t, c, "images/a.qcow2", bytes.Repeat([]byte("a"), 4096), nil)
	putObject(t, c, "images/deep/b.raw", []byte("b"), nil)
	putObject(t, c, "marker/", nil, nil)
	d := mount(t, c, mountOpts{})

	ls := func(p string) string {
		ents, err := os.ReadDir(d.path(p))
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
	if got, want := ls(""), "images/ marker/ top.img"; got != want {
		t.Errorf("ls / = %q, want %q", got, want)
	}
	if got, want := ls("images"), "a.qcow2 deep/"; got != want {
		t.Errorf("ls /images = %q, want %q", got, want)
	}
	st, err := os.Stat(d.path("top.img"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 13 || st.ModTime().Unix() != 1600000000 || st.IsDir() {
		t.Errorf("stat top.img: size %d, mtime %v", st.Size(), st.ModTime())
	}
	st, err = os.Stat(d.path("images/a.qcow2"))
	if err != nil || st.Size() != 4096 {
		t.Fatalf("stat images/a.qcow2: %v %v", st, err)
	}
	// No Mtime metadata: Swift's Last-Modified, which is recent.
	if age := time.Since(st.ModTime()); age < -2*time.Second || age > 10*time.Minute {
		t.Errorf("mtime of a.qcow2 is %v old", age)
	}
	if st, err := os.Stat(d.path("images/deep")); err != nil || !st.IsDir() {
		t.Errorf("stat images/deep: %v %v", st, err)
	}
	if _, err := os.Stat(d.path("missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat missing: %v", err)
	}
	// `ls -l` through the real tool, as an operator would.
	out := runCmd(t, "ls", "-l", d.path("images"))
	if !strings.Contains(out, "4096") || !strings.Contains(out, "a.qcow2") {
		t.Errorf("ls -l: %s", out)
	}
}

func TestCatAndDdAreRangedReads(t *testing.T) {
	c := newContainer(t)
	src, sum := randomFile(t, 10<<20+333, 1)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	putObject(t, c, "disk.raw", data, nil)
	d := mount(t, c, mountOpts{})

	if got := sha256File(t, d.path("disk.raw")); got != sum {
		t.Fatalf("sha256 through the mount %s, want %s", got, sum)
	}
	out := filepath.Join(t.TempDir(), "part")
	runCmd(t, "dd", "if="+d.path("disk.raw"), "of="+out, "bs=4096", "skip=1000", "count=300", "status=none")
	part, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(part, data[4096*1000:4096*1300]) {
		t.Error("dd skip/count read the wrong bytes")
	}
	catOut, err := exec.Command("cat", d.path("disk.raw")).Output()
	if err != nil || !bytes.Equal(catOut, data) {
		t.Errorf("cat: %v, %d bytes", err, len(catOut))
	}
}

// TestCopyLargeFile is the acceptance test of the walking skeleton: a
// 300 MiB file copied in is an SLO, and reads back identically through the
// mount and through the swift CLI.
func TestCopyLargeFile(t *testing.T) {
	c := newContainer(t)
	src, sum := randomFile(t, 300<<20, 2)
	d := mount(t, c, mountOpts{args: []string{"--segment-size", "32MiB"}})
	runCmd(t, "cp", src, d.path("big.img"))

	st, err := os.Stat(d.path("big.img"))
	if err != nil || st.Size() != 300<<20 {
		t.Fatalf("stat after cp: %v %v", st, err)
	}
	if got := sha256File(t, d.path("big.img")); got != sum {
		t.Errorf("sha256 through the mount %s, want %s", got, sum)
	}
	dl := filepath.Join(t.TempDir(), "download")
	runCmd(t, "swift", "download", c, "big.img", "-o", dl)
	if got := sha256File(t, dl); got != sum {
		t.Errorf("sha256 through swift download %s, want %s", got, sum)
	}
	stat := runCmd(t, "swift", "stat", c, "big.img")
	if !strings.Contains(stat, "X-Static-Large-Object: True") {
		t.Errorf("swift stat does not show an SLO manifest:\n%s", stat)
	}
	in, err := swift.Head(t.Context(), c, "big.img")
	if err != nil {
		t.Fatal(err)
	}
	if in.Meta["sha256"] != sum {
		t.Errorf("X-Object-Meta-Sha256 = %q, want %q", in.Meta["sha256"], sum)
	}
	// Segments are hidden from the mount.
	ents, _ := os.ReadDir(d.dir)
	if len(ents) != 1 {
		t.Errorf("mount shows %d entries, want only big.img", len(ents))
	}
}

func TestCopySmallFileIsOneObject(t *testing.T) {
	c := newContainer(t)
	src, sum := randomFile(t, 100<<10, 3)
	d := mount(t, c, mountOpts{})
	runCmd(t, "cp", src, d.path("small.img"))
	in, err := swift.Head(t.Context(), c, "small.img")
	if err != nil {
		t.Fatal(err)
	}
	if in.SLO || in.DLO != "" || in.Size != 100<<10 {
		t.Errorf("small file stored as %+v", in)
	}
	if got := sha256File(t, d.path("small.img")); got != sum {
		t.Error("content differs")
	}
	if err := swift.HeadContainer(t.Context(), c+"_segments"); !errors.Is(err, segments.ErrNotFound) {
		t.Errorf("a small file created the segment container (%v)", err)
	}
}

// TestCloseReportsUploadFailure: when Swift keeps failing the segment
// uploads, cp fails (close returns the error), nothing becomes visible and
// the previous version stays intact.
func TestCloseReportsUploadFailure(t *testing.T) {
	c := newContainer(t)
	putObject(t, c, "vm.img", []byte("previous version"), nil)
	fp := newFaultProxy(t)
	d := mount(t, c, mountOpts{args: []string{"--os-storage-url", fp.storageURL, "--retry-budget", "3s", "--segment-size", "8MiB"}})
	fp.setRule(func(r *http.Request) (int, bool) { return http.StatusServiceUnavailable, isSegmentPut(r) })

	src, _ := randomFile(t, 40<<20, 4)
	out, err := exec.Command("cp", src, d.path("vm.img")).CombinedOutput()
	if err == nil {
		t.Fatalf("cp succeeded although every segment upload failed: %s", out)
	}
	if !strings.Contains(string(out), "Input/output error") {
		t.Errorf("cp said: %s", out)
	}
	if fp.faults.Load() == 0 {
		t.Error("the fault proxy injected nothing")
	}
	fp.setRule(nil)
	rc, err := swift.Get(t.Context(), c, "vm.img", 0, -1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.ReadFrom(rc)
	if buf.String() != "previous version" {
		t.Errorf("previous version damaged: %q", buf.String())
	}
	if !strings.Contains(d.logText(), "segment upload failed") {
		t.Error("the failure is not in the log")
	}
}

func TestRemoveMkdirRmdir(t *testing.T) {
	c := newContainer(t)
	d := mount(t, c, mountOpts{args: []string{"--segment-size", "1MiB"}})
	runCmd(t, "mkdir", d.path("dir"))
	if in, err := swift.Head(t.Context(), c, "dir/"); err != nil || in.ContentType != "application/directory" {
		t.Errorf("mkdir made %+v, %v", in, err)
	}
	src, _ := randomFile(t, 3<<20+5, 5) // an SLO of 4 segments
	runCmd(t, "cp", src, d.path("dir/f.img"))
	if out, err := exec.Command("rmdir", d.path("dir")).CombinedOutput(); err == nil || !strings.Contains(string(out), "not empty") {
		t.Errorf("rmdir of a full directory: %v %s", err, out)
	}
	runCmd(t, "rm", d.path("dir/f.img"))
	if _, err := os.Stat(d.path("dir/f.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still there after rm: %v", err)
	}
	runCmd(t, "rmdir", d.path("dir"))
	var left []string
	for _, cn := range []string{c, c + "_segments"} {
		_ = swift.List(t.Context(), cn, "", 0, func(in segments.Info) error { left = append(left, cn+"/"+in.Name); return nil })
	}
	if len(left) != 0 {
		t.Errorf("left in Swift after rm and rmdir: %v", left)
	}
}

// TestUnmountOnSignalsAndUmount: SIGINT, SIGTERM and umount all end the
// daemon with status 0 and the mount gone.
func TestUnmountOnSignalsAndUmount(t *testing.T) {
	c := newContainer(t)
	for _, how := range []string{"SIGINT", "SIGTERM", "umount"} {
		t.Run(how, func(t *testing.T) {
			d := mount(t, c, mountOpts{})
			switch how {
			case "SIGINT":
				d.cmd.Process.Signal(syscall.SIGINT)
			case "SIGTERM":
				d.cmd.Process.Signal(syscall.SIGTERM)
			case "umount":
				runCmd(t, "umount", d.dir)
			}
			select {
			case <-d.done:
			case <-time.After(30 * time.Second):
				t.Fatal("imagefs did not exit")
			}
			d.stop() // checks exit status 0 and that nothing is mounted
		})
	}
}

func TestMountPrefix(t *testing.T) {
	c := newContainer(t)
	putObject(t, c, "tenant-a/one.img", []byte("1"), nil)
	putObject(t, c, "tenant-b/two.img", []byte("2"), nil)
	d := mount(t, c+"/tenant-a", mountOpts{})
	ents, err := os.ReadDir(d.dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "one.img" {
		t.Fatalf("ls of the prefix mount: %v %v", ents, err)
	}
	if err := os.WriteFile(d.path("new.img"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := swift.Head(t.Context(), c, "tenant-a/new.img"); err != nil {
		t.Errorf("written below the prefix? %v", err)
	}
	_ = fmt.Sprint()
}

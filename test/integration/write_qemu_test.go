//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// sparseSource makes a local raw image of size bytes with random data
// at the given MiB offsets (mib MiB each) and holes elsewhere.
func sparseSource(t *testing.T, size int64, mib int, at ...int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src.raw")
	data, _ := labtest.RandomFile(t, int64(mib)<<20, uint64(size))
	labtest.RunCmd(t, "truncate", "-s", strconv.FormatInt(size, 10), src)
	for _, off := range at {
		labtest.RunCmd(t, "dd", "if="+data, "of="+src, "bs=1M", "seek="+strconv.Itoa(off), "conv=notrunc", "status=none")
	}
	return src
}

// TestWriteQemuConvertRaw: qemu-img creates the file (truncate, a first
// block), closes it, opens it again O_RDWR without O_TRUNC and writes the
// data with parallel pwrites, skipping zeros. The result is identical and
// the holes are not uploaded.
func TestWriteQemuConvertRaw(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "8MiB"}})
	src := sparseSource(t, 1<<30, 40, 0, 500, 900)
	labtest.RunCmd(t, "qemu-img", "convert", "-O", "raw", src, d.Path("vm.raw"))
	if out := labtest.RunCmd(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, d.Path("vm.raw")); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
	sum := labtest.SHA256File(t, src)
	if got := labtest.SwiftDownloadSHA256(t, c, "vm.raw"); got != sum {
		t.Errorf("swift download: sha256 %s, want %s", got, sum)
	}
	var uploaded int64
	for _, in := range labtest.SegmentInfos(t, c) {
		if !strings.Contains(in.Name, "/manifest-") {
			uploaded += in.Size
		}
	}
	if uploaded > 200<<20 {
		t.Errorf("%d MiB uploaded for 120 MiB of data", uploaded>>20)
	}
	// The sha256 metadata survives the reopen: the data it reuses from the
	// first version is known to be zeros.
	in, err := labtest.Swift.Head(t.Context(), c, "vm.raw")
	if err != nil || in.Meta["sha256"] != sum {
		t.Errorf("sha256 metadata %q, want %q (%v)", in.Meta["sha256"], sum, err)
	}
}

// TestWriteQemuConvertQcow2: qemu-img writes a qcow2 out of order (it
// goes back to its tables). With a staging directory the file is staged
// and the image is identical; without one the writes fail with ESPIPE, a
// log line names the file and the offset, and nothing is published; with
// a staging budget too small the writes fail with ENOSPC, not corruption.
func TestWriteQemuConvertQcow2(t *testing.T) {
	src := sparseSource(t, 1<<30, 100, 0, 300)
	t.Run("staged", func(t *testing.T) {
		t.Parallel()
		c := labtest.NewContainer(t)
		stage := t.TempDir()
		d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "16MiB", "--staging-dir", stage, "--staging-size", "1GiB"}})
		labtest.RunCmd(t, "qemu-img", "convert", "-O", "qcow2", src, d.Path("vm.qcow2"))
		if out := labtest.RunCmd(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, d.Path("vm.qcow2")); !strings.Contains(out, "identical") {
			t.Errorf("qemu-img compare: %s", out)
		}
		labtest.RunCmd(t, "qemu-img", "check", d.Path("vm.qcow2"))
		if !strings.Contains(d.LogText(), "staged on local disk") {
			t.Error("the file was not staged: the test tests nothing")
		}
		// Through Swift, as another host would read it.
		dl := filepath.Join(t.TempDir(), "vm.qcow2")
		labtest.RunCmd(t, "swift", "download", c, "vm.qcow2", "-o", dl)
		if out := labtest.RunCmd(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, dl); !strings.Contains(out, "identical") {
			t.Errorf("qemu-img compare of the downloaded image: %s", out)
		}
		if ents, _ := os.ReadDir(stage); len(ents) != 0 {
			t.Errorf("the staging directory is not empty: %v", ents)
		}
	})
	t.Run("no staging", func(t *testing.T) {
		t.Parallel()
		c := labtest.NewContainer(t)
		d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "16MiB"}})
		out, err := exec.Command("qemu-img", "convert", "-O", "qcow2", src, d.Path("vm.qcow2")).CombinedOutput()
		if err == nil {
			t.Fatalf("qemu-img convert -O qcow2 succeeded without staging: %s", out)
		}
		if !strings.Contains(string(out), "Illegal seek") {
			t.Errorf("qemu-img said: %s", out)
		}
		log := d.LogText()
		if !strings.Contains(log, "goes back into data already uploaded") || !strings.Contains(log, "object=vm.qcow2") || !strings.Contains(log, "off=") {
			t.Errorf("no log line names the file and the offset:\n%s", log)
		}
	})
	t.Run("staging full", func(t *testing.T) {
		t.Parallel()
		c := labtest.NewContainer(t)
		d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "16MiB", "--staging-dir", t.TempDir(), "--staging-size", "64MiB"}})
		// qemu-img reports the failed writes but, as it ignores errors of
		// close, may still exit 0; the commit failed and published nothing.
		out, _ := exec.Command("qemu-img", "convert", "-O", "qcow2", src, d.Path("vm.qcow2")).CombinedOutput()
		if !strings.Contains(string(out), "No space left on device") {
			t.Errorf("qemu-img said: %s", out)
		}
		if !strings.Contains(d.LogText(), "staging directory full") {
			t.Error("the log does not say that staging is full")
		}
		// Whatever qemu-img left is a consistent earlier version (its
		// freshly created empty image), never a mix.
		if _, err := os.Stat(d.Path("vm.qcow2")); err == nil {
			if out, err := exec.Command("qemu-img", "check", d.Path("vm.qcow2")).CombinedOutput(); err != nil {
				t.Errorf("what remains is not a valid qcow2: %v %s", err, out)
			}
		}
	})
}

// TestWriteFlagsBadInput: wrong write settings fail before mounting with
// a message that names the flag.
func TestWriteFlagsBadInput(t *testing.T) {
	c := labtest.NewContainer(t)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	flagsRejected(t, c, []flagCase{
		{func(string) []string { return []string{"--upload-workers", "0"} }, "--upload-workers 0: must be between 1 and 64"},
		{func(string) []string { return []string{"--segment-size", "512KiB"} }, "--segment-size 512KiB: must be between 1MiB and 5GiB"},
		{func(string) []string { return []string{"--staging-size", "1MiB"} }, "--staging-size 1MiB: must be at least 64MiB"},
		{func(string) []string { return []string{"--staging-size", "much"} }, `--staging-size: "much" is not a size`},
		{func(mnt string) []string { return []string{"--staging-dir", filepath.Join(mnt, "stage")} }, "is inside the mountpoint"},
		{func(string) []string { return []string{"--staging-dir", "/nonexistent/stage"} }, "--staging-dir: staging directory: stat /nonexistent/stage: no such file or directory"},
		{func(string) []string { return []string{"--staging-dir", notDir} }, "is not a directory"},
	})
}

//go:build integration

package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// vmReader is a process in its own mount namespace (as libvirt runs each
// qemu) that reads an image on the mount again and again with O_DIRECT,
// so that every read reaches the daemon and not the page cache. Each read
// is one line of its output: the sha256 of what it read, after dd's error
// if there was one.
type vmReader struct {
	cmd  *exec.Cmd
	out  string // its output file
	stop string // it stops when this file exists
}

func startVMReader(t *testing.T, img string) *vmReader {
	t.Helper()
	dir := t.TempDir()
	r := &vmReader{out: filepath.Join(dir, "reads"), stop: filepath.Join(dir, "stop")}
	f, err := os.Create(r.out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`while [ ! -e "$2" ]; do echo "$(dd if="$1" bs=1M iflag=direct status=none | sha256sum)"; sleep 0.2; done`,
		"sh", img, r.stop)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.cmd.Process.Kill(); _ = r.cmd.Wait() })
	return r
}

// reads are the lines of the reader's output so far.
func (r *vmReader) reads(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(r.out)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			lines = append(lines, strings.TrimSuffix(l, "  -"))
		}
	}
	return lines
}

// waitReads waits for n more reads than there are now.
func (r *vmReader) waitReads(t *testing.T, n int, what string) {
	t.Helper()
	want := len(r.reads(t)) + n
	waitFor(t, 20*time.Second, what, func() bool { return len(r.reads(t)) >= want })
}

// TestRestartWithOtherNamespace: a restart (SIGTERM, then a new daemon on
// the same mountpoint) while a VM-like reader in another mount namespace
// reads an image. go-fuse cannot hand the FUSE connection to a new daemon
// (shutdown.go says why), so the safe default is that the stopping daemon
// keeps serving the reader for as long as it holds the mount, well past
// --shutdown-timeout; `imagefs holders` names it; a new daemon on the same
// mountpoint is refused meanwhile (it would overwrite the leases); when the
// reader lets go, the old daemon exits by itself, cleanly, and the new one
// mounts and serves. The reader never sees an error.
//
// Not parallel: a mount namespace made with private propagation while the
// mount exists holds a copy of it, so another test's reader would hold the
// old daemon too (libvirt's are slaves, which an unmount reaches).
func TestRestartWithOtherNamespace(t *testing.T) {
	c := labtest.NewContainer(t)
	// --holder-timeout 0: the production default (labtest's is 2 s).
	d1 := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--shutdown-timeout", "1s", "--holder-timeout", "0"}})
	src, sum := labtest.RandomFile(t, 16<<20, 98)
	labtest.RunCmd(t, "cp", src, d1.Path("x.img"))
	vm := startVMReader(t, d1.Path("x.img"))
	vm.waitReads(t, 2, "the reader's first reads")

	// Before the stop: holders names the reader and exits 1.
	out, err := exec.Command(labtest.Binary, "holders", d1.Dir).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "(sh)") ||
		!strings.Contains(string(out), "stop or migrate them first") {
		t.Errorf("imagefs holders %s with a reader in another namespace: %v\n%s", d1.Dir, err, out)
	}

	// Another user cannot see all namespaces: holders says so, never "none".
	bin := filepath.Join(t.TempDir(), "imagefs")
	labtest.RunCmd(t, "install", "-m", "755", labtest.Binary, bin)
	labtest.MakeReachable(t, bin)
	nobody := exec.Command(bin, "holders", "/")
	nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := nobody.CombinedOutput(); !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "run imagefs holders as root") {
		t.Errorf("imagefs holders as nobody: %v\n%s", err, out)
	}

	start := time.Now()
	_ = d1.Cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 3*time.Second, "the mount to be gone here", func() bool { return !labtest.Mounted(d1.Dir) })

	// During: a new daemon on the mountpoint is refused, naming the old.
	labtest.MountFails(t, nil, []string{c, d1.Dir}, 1,
		fmt.Sprintf("imagefs pid %d (imagefs) still serves %s, for processes of other mount namespaces", d1.Cmd.Process.Pid, d1.Dir))
	// Well past --shutdown-timeout, the reader is still served.
	time.Sleep(time.Until(start.Add(4 * time.Second)))
	vm.waitReads(t, 3, "reads after the shutdown timeout")
	select {
	case <-d1.Done:
		t.Fatalf("imagefs exited while another namespace still reads the mount: %v", d1.Exit)
	default:
	}
	if log := d1.LogText(); !strings.Contains(log, "other mount namespaces still use the mount") ||
		!strings.Contains(log, "serving them until they let go") || !strings.Contains(log, "(sh)") {
		t.Errorf("the log does not name the holder and say it is served until it lets go:\n%s", log)
	}

	// The reader lets go: the old daemon exits by itself, cleanly.
	if err := os.WriteFile(vm.stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_ = vm.cmd.Wait()
	select {
	case <-d1.Done:
	case <-time.After(10 * time.Second):
		t.Fatal("imagefs did not exit after the other namespace let go of the mount")
	}
	if d1.Exit != nil {
		t.Errorf("imagefs exited with %v", d1.Exit)
	}
	if !strings.Contains(d1.LogText(), "the other mount namespaces let go of the mount") {
		t.Errorf("the log does not say the holder let go:\n%s", d1.LogText())
	}
	took := time.Since(start)

	// After: the new daemon mounts the same mountpoint; a new namespace
	// reads through it.
	d2 := labtest.Mount(t, c, labtest.MountOpts{Dir: d1.Dir})
	after := startVMReader(t, d2.Path("x.img"))
	after.waitReads(t, 1, "a read through the new daemon")

	// Every read of the holder, before, during and after the stop's
	// timeouts, gave the image.
	reads := vm.reads(t)
	for i, r := range reads {
		if r != sum {
			t.Fatalf("read %d of %d in the other namespace: %q, want the image's sha256 %s", i+1, len(reads), r, sum)
		}
	}
	if r := after.reads(t)[0]; r != sum {
		t.Errorf("read through the new daemon: %q, want %s", r, sum)
	}
	t.Logf("%d reads in the other namespace, all good; the old daemon served it for %v after SIGTERM", len(reads), took)
}

// TestShutdownForcedWithOtherNamespace: while the stopping daemon serves
// another namespace, a second SIGTERM ends it at once, cleanly; the log
// names the holder, whose reads then fail with ENOTCONN.
func TestShutdownForcedWithOtherNamespace(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{})
	src, _ := labtest.RandomFile(t, 4<<20, 99)
	labtest.RunCmd(t, "cp", src, d.Path("x.img"))
	vm := startVMReader(t, d.Path("x.img"))
	vm.waitReads(t, 1, "the reader's first read")
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 5*time.Second, "the log to name the holder", func() bool {
		return strings.Contains(d.LogText(), "serving them until they let go")
	})
	start := time.Now()
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.Done:
	case <-time.After(5 * time.Second):
		t.Fatal("imagefs did not exit within 5 s of a second SIGTERM")
	}
	t.Logf("exited %v after the second SIGTERM", time.Since(start))
	d.Stop() // status 0, mount gone
	if !strings.Contains(d.LogText(), "second signal: exiting while other mount namespaces still use the mount") {
		t.Errorf("the log does not say what the forced stop means for the holder:\n%s", d.LogText())
	}
	waitFor(t, 5*time.Second, "the reader's read to fail with ENOTCONN", func() bool {
		b, _ := os.ReadFile(vm.out)
		return strings.Contains(string(b), "Transport endpoint is not connected")
	})
}

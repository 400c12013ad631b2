//go:build integration

package integration

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// stopWithin sends SIGTERM and fails the test unless the daemon exits
// (status 0, nothing mounted) within d.
func stopWithin(t *testing.T, dm *labtest.Daemon, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = dm.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dm.Done:
	case <-time.After(d):
		t.Errorf("imagefs did not exit within %v of SIGTERM", d)
	}
	took := time.Since(start)
	dm.Stop() // status 0, mount gone
	return took
}

// TestShutdownWithOtherNamespace: a process in another mount namespace
// (as libvirt runs qemu) holds a copy of the mount. SIGTERM detaches the
// mount here at once, names the holder in the log, keeps serving it until
// --holder-timeout (it reads a whole image meanwhile), then exits.
// restart_test.go has the default, without that timeout.
func TestShutdownWithOtherNamespace(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--shutdown-timeout", "2s", "--holder-timeout", "6s"}})
	src, sum := labtest.RandomFile(t, 24<<20, 95)
	labtest.RunCmd(t, "cp", src, d.Path("x.img"))
	var out bytes.Buffer
	vm := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		"sleep 2; sha256sum "+d.Path("x.img")+"; sleep 60")
	vm.Stdout, vm.Stderr = &out, &out
	vm.WaitDelay = time.Second // its sleep 60 keeps the output open
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = vm.Process.Kill(); _ = vm.Wait() })
	time.Sleep(500 * time.Millisecond) // the namespace exists, with its copy
	start := time.Now()
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 3*time.Second, "the mount to be gone here", func() bool { return !labtest.Mounted(d.Dir) })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the mount stayed %v here after SIGTERM", took)
	}
	select {
	case <-d.Done:
	case <-time.After(15 * time.Second):
		t.Fatal("imagefs did not exit within the holder timeout and a few seconds")
	}
	took := time.Since(start)
	d.Stop()
	if took < 5*time.Second {
		t.Errorf("exited after %v: the other namespace was not served until the timeout", took)
	}
	if !strings.Contains(out.String(), sum) {
		t.Errorf("the process in the other namespace could not read the image during the shutdown: %q", out.String())
	}
	log := d.LogText()
	if !strings.Contains(log, "other mount namespaces still use the mount") || !strings.Contains(log, "(sh)") {
		t.Errorf("the log does not name the holder:\n%s", log)
	}
	if !strings.Contains(log, "holder timeout: exiting while other mount namespaces still use the mount") {
		t.Errorf("the log does not say what the exit means for the holder:\n%s", log)
	}
}

// TestShutdownBounded: SIGTERM ends the daemon within --shutdown-timeout
// and a few seconds, whatever the requests in flight are doing: a read
// whose GET stalls, a copy whose segment PUTs stall. The abandoned upload
// keeps the previous version and is found by gc.
func TestShutdownBounded(t *testing.T) {
	t.Parallel()
	for _, stall := range []string{"read", "upload"} {
		t.Run(stall, func(t *testing.T) {
			c := labtest.NewContainer(t)
			fp := labtest.NewFaultProxy(t)
			d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL, "--shutdown-timeout", "4s",
				"--segment-size", "1MiB", "--read-ahead", "1MiB"}})
			src, sum := labtest.RandomFile(t, 8<<20, 96)
			labtest.RunCmd(t, "cp", src, d.Path("x.img"))
			var cmd *exec.Cmd
			switch stall {
			case "read":
				fp.SetFault(func(r *http.Request) labtest.Fault {
					if r.Method == http.MethodGet && r.Header.Get("Range") != "" {
						return labtest.Fault{CutAfter: 1, Stall: 10 * time.Minute}
					}
					return labtest.Fault{}
				})
				cmd = exec.Command("cat", d.Path("x.img"))
			case "upload":
				fp.SetFault(func(r *http.Request) labtest.Fault {
					if labtest.IsSegmentPut(r) {
						return labtest.Fault{Delay: 10 * time.Minute}
					}
					return labtest.Fault{}
				})
				cmd = exec.Command("cp", src, d.Path("x.img"))
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			time.Sleep(time.Second) // the request is stuck
			took := stopWithin(t, d, 15*time.Second)
			t.Logf("stopped in %v", took)
			fp.SetFault(nil)
			if got := labtest.SwiftDownloadSHA256(t, c, "x.img"); got != sum {
				t.Error("the previous version is damaged")
			}
			if stall == "upload" && !strings.Contains(d.LogText(), "uploads are abandoned") {
				t.Errorf("the log does not say the upload was abandoned:\n%s", d.LogText())
			}
			// What the stop abandoned is gc's: after the lease's TTL (6 s
			// here) nothing but the first version's segments is left.
			time.Sleep(7 * time.Second)
			gcAll(t, c)
			in, err := labtest.Swift.Head(t.Context(), c, "x.img")
			if err != nil {
				t.Fatal(err)
			}
			m, err := segments.ResolveInfo(t.Context(), labtest.Swift, in)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(labtest.SegmentNames(t, c)); n != len(m.Segments) {
				t.Errorf("%d segments left after gc, the image references %d", n, len(m.Segments))
			}
		})
	}
}

// TestShutdownWithKeystoneDown: with Keystone stopped (the token still
// valid), SIGTERM ends an idle mount and one with a file open within the
// timeout.
func TestShutdownWithKeystoneDown(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--shutdown-timeout", "3s"}})
	labtest.RunCmd(t, "cp", must(labtest.RandomFile(t, 2<<20, 97)), d.Path("x.img"))
	f, err := os.Open(d.Path("x.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := labtest.StopKeystone(t)
	defer start()
	stopWithin(t, d, 15*time.Second)
}

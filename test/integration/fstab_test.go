//go:build integration

package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// helperPath is where util-linux's mount looks for the helper of type
// fuse.imagefs (its search path is fixed: /sbin, /sbin/fs.d, /sbin/fs).
const helperPath = "/sbin/mount.fuse.imagefs"

// installHelper links helperPath to the binary under test, as the README
// says to, and puts back what was there when the test ends.
func installHelper(t *testing.T) {
	t.Helper()
	old, err := os.Readlink(helperPath)
	switch {
	case err == nil:
		t.Cleanup(func() { _ = os.Remove(helperPath); _ = os.Symlink(old, helperPath) })
	case errors.Is(err, os.ErrNotExist):
		t.Cleanup(func() { _ = os.Remove(helperPath) })
	default:
		t.Fatalf("%s exists and is not a symlink (an installed helper?): %v; remove it to run this test", helperPath, err)
	}
	_ = os.Remove(helperPath)
	if err := os.Symlink(labtest.Binary, helperPath); err != nil {
		t.Fatal(err)
	}
}

// envFile writes an env file with the demo user's settings, the password
// in a file of its own (OS_PASSWORD_FILE), plus extra lines.
func envFile(t *testing.T, password string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lines := []string{"# written by " + t.Name()}
	for _, v := range []string{"OS_AUTH_URL", "OS_USERNAME", "OS_USER_DOMAIN_NAME", "OS_PROJECT_NAME", "OS_PROJECT_DOMAIN_NAME", "OS_REGION_NAME", "OS_INTERFACE"} {
		lines = append(lines, v+"="+os.Getenv(v))
	}
	lines = append(lines, "OS_PASSWORD_FILE="+pw, "IMAGEFS_LOG_LEVEL=debug")
	lines = append(lines, extra...)
	p := filepath.Join(dir, "images.env")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fstabMount runs `mount --fstab FILE DIR` for a one-line fstab and
// returns mount's combined output and exit status.
func fstabMount(t *testing.T, line, dir string) (string, int) {
	t.Helper()
	fstab := filepath.Join(t.TempDir(), "fstab")
	if err := os.WriteFile(fstab, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mount", "--fstab", fstab, dir)
	// The daemon must not depend on the caller's environment: mount at
	// boot has none of the lab's variables.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	code := labtest.RunWithin(t, cmd, 90*time.Second)
	return out.String(), code
}

// daemonOf is the pid of the imagefs daemon serving dir (0 if none).
func daemonOf(dir string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 2 && args[0] == labtest.Binary && args[1] == "mount" && args[len(args)-1] == dir {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// waitGone waits until process pid has exited.
func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for syscall.Kill(pid, 0) == nil {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			return // a zombie: it exited, its new parent has not reaped it yet
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon (pid %d) is still running %v after umount", pid, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFstabMount mounts a container from an fstab line with util-linux's
// mount and the helper, uses it, and unmounts it with umount.
func TestFstabMount(t *testing.T) {
	installHelper(t)
	c := labtest.NewContainer(t)
	dir := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "imagefs.log")
	env := envFile(t, os.Getenv("OS_PASSWORD"), "IMAGEFS_SEGMENT_SIZE=1MiB")
	t.Cleanup(func() {
		if labtest.Mounted(dir) {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("daemon log:\n%s", b)
		}
	})
	line := fmt.Sprintf("%s %s fuse.imagefs _netdev,nofail,noauto,allow_other,x-systemd.requires=network-online.target,uid=0,env=%s,log=%s 0 0",
		c, dir, env, logFile)
	start := time.Now()
	if out, code := fstabMount(t, line, dir); code != 0 {
		t.Fatalf("mount: status %d: %s", code, out)
	}
	// mount returns once the mount is ready: no polling here.
	if !labtest.Mounted(dir) {
		t.Fatalf("mount returned 0 after %v but %s is not mounted", time.Since(start), dir)
	}
	t.Logf("mount returned after %v", time.Since(start).Round(time.Millisecond))
	pid := daemonOf(dir)
	if pid == 0 {
		t.Fatal("no imagefs daemon serving the mount")
	}
	if sid, err := getsid(pid); err != nil || sid != pid {
		t.Errorf("the daemon's session is %d (%v), want its own (%d)", sid, err, pid)
	}
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	for _, s := range [][]byte{environ, cmdline} {
		if bytes.Contains(s, []byte(os.Getenv("OS_PASSWORD"))) {
			t.Error("the password is in the daemon's environment or command line")
		}
	}
	if !bytes.Contains(cmdline, []byte("--allow-other")) {
		t.Errorf("allow_other did not become --allow-other: %q", cmdline)
	}

	src, sum := labtest.RandomFile(t, 3<<20+12345, 12)
	labtest.RunCmd(t, "cp", src, filepath.Join(dir, "disk.img"))
	if got := labtest.SHA256File(t, filepath.Join(dir, "disk.img")); got != sum {
		t.Errorf("read back %s, want %s", got, sum)
	}
	if got := labtest.SwiftDownloadSHA256(t, c, "disk.img"); got != sum {
		t.Errorf("in Swift: %s, want %s", got, sum)
	}

	stop := time.Now()
	labtest.RunCmd(t, "umount", dir)
	waitGone(t, pid, 15*time.Second)
	t.Logf("the daemon exited %v after umount", time.Since(stop).Round(time.Millisecond))
	if labtest.Mounted(dir) {
		t.Errorf("%s still mounted after umount", dir)
	}
	log, _ := os.ReadFile(logFile)
	for _, want := range []string{"msg=mounted", `msg="unmounted from outside"`} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("the daemon's log lacks %s", want)
		}
	}
	if bytes.Contains(log, []byte("level=ERROR")) {
		t.Errorf("the daemon logged errors:\n%s", log)
	}
}

func getsid(pid int) (int, error) {
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(sid), nil
}

// TestFstabMountFails: a mount that cannot work fails with imagefs' own
// clear error and a non-zero status, and leaves nothing mounted or running.
func TestFstabMountFails(t *testing.T) {
	installHelper(t)
	c := labtest.NewContainer(t)
	good := envFile(t, os.Getenv("OS_PASSWORD"))
	for _, tc := range []struct {
		name, spec, env, opts, want string
	}{
		{"wrong password", c, envFile(t, "not-the-password"), "", "Keystone refused the credentials"},
		{"missing container", c + "-missing", good, "", "does not exist"},
		{"unknown option", c, good, ",noexec", "unknown option noexec"},
		{"secret in the options", c, good, ",os_password=hunter2", "a secret in the mount options"},
		{"bad setting", c, good, ",segment_size=lots", "segment-size"},
		{"missing env file", c, good + ".missing", "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			logFile := filepath.Join(t.TempDir(), "imagefs.log")
			line := fmt.Sprintf("%s %s fuse.imagefs _netdev,env=%s,log=%s%s 0 0", tc.spec, dir, tc.env, logFile, tc.opts)
			out, code := fstabMount(t, line, dir)
			if code == 0 {
				t.Fatalf("mount succeeded: %s", out)
			}
			if !strings.Contains(out, "imagefs: ") || !strings.Contains(out, tc.want) {
				t.Errorf("mount said %q, want imagefs' error saying %q", out, tc.want)
			}
			for _, bad := range []string{"goroutine ", "panic", ".go:", "hunter2", os.Getenv("OS_PASSWORD")} {
				if strings.Contains(out, bad) {
					t.Errorf("mount's output has %q: %s", bad, out)
				}
			}
			if labtest.Mounted(dir) {
				_ = syscall.Unmount(dir, syscall.MNT_DETACH)
				t.Errorf("%s is mounted", dir)
			}
			if pid := daemonOf(dir); pid != 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("a daemon (pid %d) is still running", pid)
			}
		})
	}
}

//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// statusJSON is the part of `imagefs status --json` the tests read.
type statusJSON struct {
	Mountpoint string
	Auth       struct{ Mode string }
	Uploads    []struct {
		Path     string
		State    string
		Written  int64 `json:"written_bytes"`
		Uploaded int64 `json:"uploaded_bytes"`
		InFlight int64 `json:"segments_in_flight"`
		Done     int64 `json:"segments_done"`
	}
	Recent []struct{ Level, Msg string } `json:"recent_errors"`
}

// TestStatusDuringSlowCopy: while a copy is slowed down by a proxy that
// delays every segment PUT (and fails one with 503), `imagefs status`
// shows the upload in flight with its progress and the retry among the
// recent warnings, and the file's user.imagefs.upload attribute shows the
// same progress. Once the copy is committed, status shows no upload and
// the attribute is gone (ENODATA).
func TestStatusDuringSlowCopy(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	c := labtest.NewContainer(t)
	fp := labtest.NewFaultProxy(t)
	var failed atomic.Bool
	fp.SetFault(func(r *http.Request) labtest.Fault {
		if !labtest.IsSegmentPut(r) || !strings.Contains(r.URL.Path, "/slow.img/") {
			return labtest.Fault{}
		}
		if failed.CompareAndSwap(false, true) {
			return labtest.Fault{Status: http.StatusServiceUnavailable}
		}
		return labtest.Fault{Delay: 500 * time.Millisecond}
	})
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL,
		"--segment-size", "2MiB", "--upload-workers", "1"}})
	src, sum := labtest.RandomFile(t, size, 72)
	dst := d.Path("slow.img")
	cp := exec.Command("cp", src, dst)
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Wait() }()

	// Wait until a segment is stored while the copy still runs.
	var st statusJSON
	var xattr string
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = statusOfMount(t, d.Dir)
		if len(st.Uploads) == 1 && st.Uploads[0].Done > 0 {
			xattr = uploadXattr(t, dst)
			break
		}
		select {
		case err := <-cpDone:
			t.Fatalf("the copy ended (%v) before status showed a stored segment: %+v", err, st)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("status showed no upload with a stored segment within 30 s: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	u := st.Uploads[0]
	if u.Path != "slow.img" || u.State != "writing" || u.Written < u.Uploaded || u.Uploaded < 2<<20 || u.Written > size {
		t.Errorf("upload in status: %+v", u)
	}
	if st.Mountpoint != d.Dir || st.Auth.Mode != "password" {
		t.Errorf("status: mountpoint %q auth %q", st.Mountpoint, st.Auth.Mode)
	}
	if !recentHas(st, "retrying") {
		t.Errorf("status does not show the retry among the recent warnings: %+v", st.Recent)
	}
	// user.imagefs.upload, read a moment after the status: at least as far.
	m := regexp.MustCompile(`^state=writing written=(\d+) uploaded=(\d+) segments_in_flight=(\d+) segments_queued=(\d+) segments_done=(\d+)$`).FindStringSubmatch(xattr)
	if m == nil {
		t.Fatalf("user.imagefs.upload = %q", xattr)
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(m[i], 10, 64); return v }
	if n(1) < u.Written || n(2) < u.Uploaded || n(5) < u.Done || n(2) > n(1) {
		t.Errorf("user.imagefs.upload %q is behind the status before it: %+v", xattr, u)
	}

	// The text form says the same, for a person.
	r := labtest.Exec(t, "status", d.Dir)
	if r.Code != 0 || !strings.Contains(r.Stdout, "slow.img") || !strings.Contains(r.Stdout, "uploads in progress: 1") ||
		!strings.Contains(r.Stdout, "auth: password") {
		t.Errorf("imagefs status: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if pw := os.Getenv("OS_PASSWORD"); strings.Contains(r.Stdout, pw) || strings.Contains(r.Stdout, "gAAAAA") {
		t.Error("imagefs status shows a secret")
	}

	select {
	case err := <-cpDone:
		if err != nil {
			t.Fatalf("cp: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("cp did not finish within 60 s")
	}
	if got := labtest.SHA256File(t, dst); got != sum {
		t.Errorf("sha256 %s, want %s", got, sum)
	}
	if st := statusOfMount(t, d.Dir); len(st.Uploads) != 0 {
		t.Errorf("uploads after the commit: %+v", st.Uploads)
	}
	buf := make([]byte, 256)
	if _, err := syscall.Getxattr(dst, "user.imagefs.upload", buf); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("user.imagefs.upload of a committed file: %v, want ENODATA", err)
	}
	if err := syscall.Setxattr(dst, "user.imagefs.upload", []byte("x"), 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("setting user.imagefs.upload: %v, want EPERM", err)
	}

	// Without a mountpoint: every mount of the host, this one among them.
	if r := labtest.Exec(t, "status"); r.Code != 0 || !strings.Contains(r.Stdout, d.Dir+": container "+c) {
		t.Errorf("imagefs status (all mounts): exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

// TestStatusErrors: status of a directory that is not a mount, of another
// filesystem, of a mount whose daemon died, and as a user who may not
// read the control socket: one clear line each, exit status 1.
func TestStatusErrors(t *testing.T) {
	t.Parallel()
	fails := func(want string, args ...string) {
		t.Helper()
		r := labtest.Exec(t, append([]string{"status"}, args...)...)
		if r.Code != 1 || !strings.Contains(r.Stderr, want) || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 ||
			strings.Contains(r.Stderr, "goroutine") {
			t.Errorf("imagefs status %v: exit %d, stderr %q; want status 1 and one line saying %q", args, r.Code, r.Stderr, want)
		}
	}
	plain := t.TempDir()
	fails(plain+" is not an imagefs mount: nothing is mounted there", plain)
	fails("/proc is not an imagefs mount: it is a proc filesystem", "/proc")
	fails("/no/such/dir does not exist", "/no/such/dir")

	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{})

	// Another user: the control socket is root's.
	bin := filepath.Join(os.TempDir(), "imagefs-status-"+strconv.Itoa(os.Getpid()))
	b, err := os.ReadFile(labtest.Binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(bin)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "status", d.Dir).CombinedOutput()
	if !strings.Contains(string(out), "permission denied on the control socket") || err == nil {
		t.Errorf("status as nobody: %v: %s", err, out)
	}

	// The daemon dies (kill -9): the mount stays, dead.
	_ = d.Cmd.Process.Signal(syscall.SIGKILL)
	<-d.Done
	fails("the imagefs daemon of "+d.Dir+" is not running: the mount is dead (unmount it: umount -l "+d.Dir+")", d.Dir)
	d.Kill() // clears the dead mount
	// The socket the killed daemon left (a mount there would replace it).
	_ = os.Remove(filepath.Join("/run/imagefs", strings.ReplaceAll(strings.Trim(d.Dir, "/"), "/", "-")+".sock"))
}

func statusOfMount(t *testing.T, dir string) statusJSON {
	t.Helper()
	r := labtest.Exec(t, "status", "--json", dir)
	if r.Code != 0 {
		t.Fatalf("imagefs status --json %s: exit %d: %s", dir, r.Code, r.Stderr)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		t.Fatalf("imagefs status --json: %v: %s", err, r.Stdout)
	}
	return st
}

func uploadXattr(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 512)
	n, err := syscall.Getxattr(p, "user.imagefs.upload", buf)
	if err != nil {
		t.Fatalf("getxattr user.imagefs.upload of a file being written: %v", err)
	}
	return string(buf[:n])
}

func recentHas(st statusJSON, s string) bool {
	for _, e := range st.Recent {
		if strings.Contains(e.Msg, s) {
			return true
		}
	}
	return false
}

//go:build integration

package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// writeRefusals tries every kind of change on a mount holding the file
// "a" and returns what each gave.
func writeRefusals(dir string) map[string]error {
	p := func(n string) string { return dir + "/" + n }
	open := func(name string, flag int) error {
		f, err := os.OpenFile(p(name), flag, 0o644)
		if err == nil {
			f.Close()
		}
		return err
	}
	return map[string]error{
		"create":           open("new", os.O_WRONLY|os.O_CREATE),
		"open for writing": open("a", os.O_WRONLY),
		"open O_TRUNC":     open("a", os.O_WRONLY|os.O_TRUNC),
		"remove":           os.Remove(p("a")),
		"rename":           os.Rename(p("a"), p("b")),
		"mkdir":            os.Mkdir(p("d"), 0o755),
		"truncate":         os.Truncate(p("a"), 0),
	}
}

func mountOptions(t *testing.T, dir string) string {
	t.Helper()
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == dir {
			return f[5]
		}
	}
	t.Fatalf("%s is not in mountinfo", dir)
	return ""
}

// TestReadOnlyMount: --read-only reads, and refuses every change at once
// (EROFS from open, not from close).
func TestReadOnlyMount(t *testing.T) {
	c := labtest.NewContainer(t)
	data := []byte("an image\n")
	labtest.PutObject(t, c, "a", data, nil)
	d := labtest.Mount(t, c, labtest.MountOpts{Env: []string{"IMAGEFS_READ_ONLY=true"}})
	if got, err := os.ReadFile(d.Path("a")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read: %q, %v", got, err)
	}
	if o := mountOptions(t, d.Dir); !strings.HasPrefix(o, "ro,") {
		t.Errorf("mount options %q, want ro", o)
	}
	for op, err := range writeRefusals(d.Dir) {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", op, err)
		}
	}
	if got := labtest.SegmentNames(t, c); len(got) > 0 {
		t.Errorf("segments written by a read-only mount: %q", got)
	}
	if got, err := os.ReadFile(d.Path("a")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("after the refused changes: %q, %v", got, err)
	}
	if !strings.Contains(d.LogText(), "read_only=true") {
		t.Error("the mount's log line does not say read_only=true")
	}
}

// TestReadOnlySharedContainer: a container of the demo user shared with
// the service user by a read ACL. Mounted by the service user with
// --read-only, it reads, and changes fail at open with EROFS; without
// --read-only, the first write fails at close with EACCES and the log says
// to mount it with --read-only.
func TestReadOnlySharedContainer(t *testing.T) {
	c := labtest.NewContainer(t)
	{
		// A large image (an SLO in two containers), by its owner.
		d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "1MiB"}})
		src, _ := labtest.RandomFile(t, 3<<20, 51)
		labtest.RunCmd(t, "cp", src, d.Path("a"))
		d.Stop()
	}
	sum := labtest.SwiftDownloadSHA256(t, c, "a")
	svc := labtest.ServiceUser()
	for _, cont := range []string{c, c + "_segments"} {
		if out, err := exec.Command("swift", "post", "-r", svc.ProjectName+":"+svc.Username, cont).CombinedOutput(); err != nil {
			t.Fatalf("swift post -r: %v: %s", err, out)
		}
	}
	env := []string{"OS_USERNAME=" + svc.Username, "OS_PASSWORD=" + string(svc.Password), "OS_PROJECT_NAME=" + svc.ProjectName,
		"OS_STORAGE_URL=" + labtest.Keeper.Current().StorageURL}

	ro := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--read-only"}, Env: env})
	if got := labtest.SHA256File(t, ro.Path("a")); got != sum {
		t.Errorf("read through the shared read-only mount: %s, want %s", got, sum)
	}
	for op, err := range writeRefusals(ro.Dir) {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("read-only: %s: %v, want EROFS", op, err)
		}
	}
	// The account is not theirs to HEAD: df shows the container.
	var st syscall.Statfs_t
	if err := syscall.Statfs(ro.Dir, &st); err != nil {
		t.Errorf("statfs: %v", err)
	}
	ro.Stop()

	rw := labtest.Mount(t, c, labtest.MountOpts{Env: env})
	f, err := os.Create(rw.Path("new"))
	if err != nil {
		t.Fatalf("create on the read-write mount: %v (the change is refused by Swift at the commit)", err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Errorf("write: %v", err)
	}
	if err := f.Close(); !errors.Is(err, syscall.EACCES) {
		t.Errorf("close of a write Swift refuses: %v, want EACCES", err)
	}
	if log := rw.LogText(); !strings.Contains(log, "mount it with --read-only") {
		t.Errorf("the log does not say to mount with --read-only:\n%s", log)
	}
	if got := labtest.SwiftDownloadSHA256(t, c, "a"); got != sum {
		t.Errorf("the image changed: %s, want %s", got, sum)
	}
}

// TestCreateContainer: --create-container mounts a container that does
// not exist, creating it and its segment container.
func TestCreateContainer(t *testing.T) {
	c := labtest.UnusedContainer(t)
	labtest.MountFails(t, nil, []string{c, t.TempDir()}, 1, "or imagefs mount --create-container")
	d := labtest.Mount(t, c, labtest.MountOpts{Env: []string{"IMAGEFS_CREATE_CONTAINER=1"}})
	for _, cont := range []string{c, c + "_segments"} {
		if _, err := labtest.Swift.HeadContainer(t.Context(), cont); err != nil {
			t.Errorf("container %s: %v", cont, err)
		}
	}
	if err := os.WriteFile(d.Path("f"), []byte("data"), 0o644); err != nil {
		t.Errorf("write into the new container: %v", err)
	}
	d.Stop()
	// Mounting it again with the flag leaves it as it is.
	d = labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--create-container"}})
	if got, err := os.ReadFile(d.Path("f")); err != nil || string(got) != "data" {
		t.Errorf("after a second --create-container mount: %q, %v", got, err)
	}
	labtest.MountFails(t, nil, []string{"--create-container", "--read-only", c, t.TempDir()}, 1, "--read-only and --create-container")
}

// Package labtest is the harness of the integration tests and benchmarks:
// it builds the real imagefs binary, mounts it against the lab's real
// Swift and Keystone (test/lab/lab.sh), and offers direct Swift access for
// setup and checks. Tests using it fail, never skip, when the lab or FUSE
// is missing.
//
//	test/lab/lab.sh up && eval "$(test/lab/lab.sh env)"
//	go test -tags integration ./test/integration/
package labtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/auth"
	"github.com/imagefs/imagefs/segments"
)

var (
	// Binary is the imagefs binary under test.
	Binary string
	// Swift is direct access to the lab's Swift (user demo), for setup and checks.
	Swift segments.ObjectStore
	// Keeper holds the demo user's token.
	Keeper *auth.Keeper

	root string // the module's root directory
)

// Main is the TestMain of a package of lab tests: it checks the lab and
// FUSE, builds the binary (relative to the package directory, pkgToRoot is
// the path to the module root, e.g. "../.."), then runs the tests.
func Main(m *testing.M, pkgToRoot string) {
	os.Exit(run(m, pkgToRoot))
}

func run(m *testing.M, pkgToRoot string) int {
	for _, v := range []string{"OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME"} {
		if os.Getenv(v) == "" {
			fmt.Fprintf(os.Stderr, "integration tests need the lab: %s is not set.\n"+
				"Run: test/lab/lab.sh up && eval \"$(test/lab/lab.sh env)\"\n", v)
			return 1
		}
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		fmt.Fprintf(os.Stderr, "integration tests need FUSE: %v\n", err)
		return 1
	} else {
		f.Close()
	}
	root, _ = filepath.Abs(pkgToRoot)
	dir, err := os.MkdirTemp("", "imagefs-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	Binary = filepath.Join(dir, "imagefs")
	args := []string{"build", "-o", Binary}
	if os.Getenv("IMAGEFS_TEST_RACE") == "1" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, filepath.Join(pkgToRoot, "cmd/imagefs"))...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build imagefs: %v\n", err)
		return 1
	}
	ctx := context.Background()
	Keeper, err = auth.New(ctx, LabAuth(), slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab credentials do not work (is the lab up?): %v\n", err)
		return 1
	}
	raw := segments.NewSwiftStore(segments.SwiftOptions{Auth: Keeper.Authenticator(), Transport: Keeper.Transport(nil)})
	Swift = &segments.Retrying{ObjectStore: raw, P: segments.RetryPolicy{Base: 100 * time.Millisecond, Cap: time.Second, Budget: 30 * time.Second}}
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go Keeper.Run(kctx)
	return m.Run()
}

// LabAuth is the demo user of the lab, from the OS_* environment.
func LabAuth() auth.Config {
	return auth.Config{
		AuthURL: os.Getenv("OS_AUTH_URL"),
		Identity: auth.Identity{
			Username:          os.Getenv("OS_USERNAME"),
			Password:          auth.Secret(os.Getenv("OS_PASSWORD")),
			UserDomainName:    os.Getenv("OS_USER_DOMAIN_NAME"),
			ProjectName:       os.Getenv("OS_PROJECT_NAME"),
			ProjectDomainName: os.Getenv("OS_PROJECT_DOMAIN_NAME"),
		},
		Region:    os.Getenv("OS_REGION_NAME"),
		Interface: os.Getenv("OS_INTERFACE"),
	}
}

// NewContainer creates a container for one test and removes it, with
// everything in it and in its segment container, when the test ends.
func NewContainer(t testing.TB) string {
	t.Helper()
	name := containerName(t)
	if err := Swift.CreateContainer(t.Context(), name); err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() { removeContainer(t, name); removeContainer(t, name+"_segments") })
	return name
}

// UnusedContainer is a container name unique to the test that does not
// exist yet; whatever the test makes of it (the container and its
// segment container) is removed when the test ends.
func UnusedContainer(t testing.TB) string {
	t.Helper()
	name := containerName(t)
	t.Cleanup(func() { removeContainer(t, name); removeContainer(t, name+"_segments") })
	return name
}

// containerName is a container name unique to the test and the moment.
func containerName(t testing.TB) string {
	name := fmt.Sprintf("it-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), time.Now().UnixNano())
	if len(name) > 200 {
		name = name[:200]
	}
	return name
}

func removeContainer(t testing.TB, c string) {
	ctx := context.Background()
	var names []string
	err := Swift.List(ctx, c, "", 0, func(in segments.Info) error { names = append(names, in.Name); return nil })
	if errors.Is(err, segments.ErrNotFound) {
		return
	}
	if err == nil && len(names) > 0 {
		err = Swift.DeleteMany(ctx, c, names)
	}
	if err != nil {
		t.Logf("cleanup of %s: %v", c, err)
		return
	}
	if out, err := exec.Command("swift", "delete", c).CombinedOutput(); err != nil {
		t.Logf("cleanup of %s: %v: %s", c, err, out)
	}
}

// Daemon is a running imagefs mount.
type Daemon struct {
	t     testing.TB
	Dir   string    // the mountpoint
	Cmd   *exec.Cmd // the imagefs process
	Log   string    // path of its log
	Done  chan struct{}
	Exit  error // valid once Done is closed
	ended bool
}

// MountOpts tune a mount.
type MountOpts struct {
	Args []string // extra flags
	Env  []string // extra environment
	Dir  string   // the mountpoint; default: a fresh temporary directory
}

// Mount starts imagefs on a fresh directory (or o.Dir) and waits for the mount
// (target "" mounts no container: an account mount, --account in o.Args). The
// mount is stopped (SIGTERM, exit status 0 expected) when the test ends.
func Mount(t testing.TB, target string, o MountOpts) *Daemon {
	t.Helper()
	dir := o.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	d := &Daemon{t: t, Dir: dir, Log: filepath.Join(t.TempDir(), "imagefs.log"), Done: make(chan struct{})}
	logf, err := os.Create(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	// Versions as in production, on a test's time scale: retired versions
	// are reaped a few seconds after retirement (tests wait for that),
	// leases die a few seconds after a crash. A stop waits at most 2 s
	// for other mount namespaces (production: until they let go): tests
	// that unshare a mount namespace copy every other test's mount too,
	// and a test that stops its daemon must not wait on another's
	// namespace; tests of the holders set their own. A test's own Args win.
	args := append([]string{"mount", "--log-level", "debug", "--version-grace", "2s", "--reap-interval", "1s", "--lease-ttl", "6s",
		"--holder-timeout", "2s"}, o.Args...)
	if target != "" { // "" for --account in o.Args
		args = append(args, target)
	}
	args = append(args, dir)
	d.Cmd = exec.Command(Binary, args...)
	d.Cmd.Env = append(os.Environ(), o.Env...)
	d.Cmd.Stdout, d.Cmd.Stderr = logf, logf
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.Exit = d.Cmd.Wait(); logf.Close(); close(d.Done) }()
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			d.DumpLog()
		}
	})
	// Mounted, and the daemon done mounting ("mounted" is logged after
	// go-fuse's WaitMount, whose last step opens a file on the mount: a
	// test's first request could otherwise hold the root directory's lock
	// while the daemon dies at a failpoint, and the daemon's thread in that
	// open could never end).
	deadline := time.Now().Add(30 * time.Second)
	for !Mounted(dir) || !loggedMounted(d.LogText()) {
		select {
		case <-d.Done:
			d.DumpLog()
			t.Fatalf("imagefs exited before mounting: %v", d.Exit)
		default:
		}
		if time.Now().After(deadline) {
			d.DumpLog()
			t.Fatal("imagefs did not mount within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// loggedMounted reports whether a daemon's log (text or JSON) has its
// "mounted" line.
func loggedMounted(log string) bool {
	return strings.Contains(log, "msg=mounted ") || strings.Contains(log, `"msg":"mounted"`)
}

// Path is the path of name inside the mount.
func (d *Daemon) Path(name string) string { return filepath.Join(d.Dir, name) }

// Stop sends SIGTERM and expects a clean exit with the mount gone. It is
// idempotent; the test's cleanup calls it too.
func (d *Daemon) Stop() {
	t := d.t
	if d.ended {
		return
	}
	d.ended = true
	select {
	case <-d.Done:
	default:
		_ = d.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.Done:
		case <-time.After(60 * time.Second):
			_ = d.Cmd.Process.Kill()
			<-d.Done
			t.Errorf("imagefs did not exit within 60 s of SIGTERM")
		}
	}
	if d.Exit != nil {
		t.Errorf("imagefs exited with %v", d.Exit)
	}
	if Mounted(d.Dir) {
		t.Errorf("%s still mounted after imagefs exited", d.Dir)
		_ = syscall.Unmount(d.Dir, syscall.MNT_DETACH)
	}
}

// Kill ends the daemon with SIGKILL (a crash) and clears the dead mount.
func (d *Daemon) Kill() {
	d.ended = true
	_ = d.Cmd.Process.Kill()
	<-d.Done
	_ = syscall.Unmount(d.Dir, syscall.MNT_DETACH)
}

// LogText is the daemon's log so far.
func (d *Daemon) LogText() string {
	b, _ := os.ReadFile(d.Log)
	return string(b)
}

// DumpLog writes the end of the daemon's log to the test log.
func (d *Daemon) DumpLog() {
	text := d.LogText()
	if len(text) > 20000 {
		text = "...\n" + text[len(text)-20000:]
	}
	d.t.Logf("imagefs log (%s):\n%s", d.Log, text)
}

// Mounted reports whether dir is a mountpoint.
func Mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// RandomFile writes size random bytes to a temp file and returns its path
// and SHA-256.
func RandomFile(t testing.TB, size int64, seed uint64) (string, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), fmt.Sprintf("random-%d.img", seed))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size)); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

// SHA256Bytes returns the hex SHA-256 of b.
func SHA256Bytes(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// SHA256File is the hex SHA-256 of a file.
func SHA256File(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RunCmd runs a command and fails the test if it fails.
func RunCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// PutObject stores an object directly in Swift.
func PutObject(t testing.TB, c, name string, data []byte, meta map[string]string) {
	t.Helper()
	if _, err := Swift.Put(t.Context(), c, name, bytes.NewReader(data), int64(len(data)), "", segments.PutOptions{Meta: meta}); err != nil {
		t.Fatal(err)
	}
}

// Result is the outcome of a command run by Exec.
type Result struct {
	Stdout, Stderr string
	Code           int // exit status; -1 if it did not run to the end
}

// Exec runs the imagefs binary with args (e.g. "gc", container) and
// returns its output and exit status; it fails the test only if the binary
// could not be started.
func Exec(t testing.TB, args ...string) Result {
	t.Helper()
	cmd := exec.Command(Binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("imagefs %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// RunWithin runs cmd and returns its exit status (0: success). It fails
// the test if cmd cannot be started, or does not exit within d (then it
// is killed).
func RunWithin(t testing.TB, cmd *exec.Cmd, d time.Duration) int {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		t.Fatalf("%s did not exit within %v", filepath.Base(cmd.Path), d)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", filepath.Base(cmd.Path), err)
	return -1
}

// MountFails runs `imagefs mount args...` with env added to the test's
// environment, and checks that it fails the way an operator's mistake
// must: exit status status within 60 s, stderr saying want in one line,
// no stack trace. It returns stderr.
func MountFails(t testing.TB, env, args []string, status int, want string) string {
	t.Helper()
	cmd := exec.Command(Binary, append([]string{"mount"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if code := RunWithin(t, cmd, 60*time.Second); code != status {
		t.Errorf("exit status %d, want %d", code, status)
	}
	out := stderr.String()
	if !strings.Contains(out, want) {
		t.Errorf("stderr %q does not say %q", out, want)
	}
	for _, bad := range []string{"goroutine ", "panic", ".go:"} {
		if strings.Contains(out, bad) {
			t.Errorf("stderr has %q: %s", bad, out)
		}
	}
	if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; status == 1 && lines != 1 {
		t.Errorf("stderr has %d lines, want 1: %s", lines, out)
	}
	return out
}

// SegmentInfos lists the segments of a container's segment container
// (not imagefs' state there: leases and retirement records).
func SegmentInfos(t testing.TB, c string) []segments.Info {
	t.Helper()
	var out []segments.Info
	err := Swift.List(context.Background(), c+"_segments", "", 0, func(in segments.Info) error {
		if !strings.HasPrefix(in.Name, StatePrefix) {
			out = append(out, in)
		}
		return nil
	})
	if err != nil && !errors.Is(err, segments.ErrNotFound) {
		t.Fatal(err)
	}
	return out
}

// StatePrefix is where imagefs keeps leases and retirement records in a
// segment container.
const StatePrefix = ".imagefs/"

// StateNames lists imagefs' state objects in a container's segment
// container (leases, retirement records).
func StateNames(t testing.TB, c string) []string {
	t.Helper()
	var out []string
	err := Swift.List(context.Background(), c+"_segments", StatePrefix, 0, func(in segments.Info) error {
		out = append(out, in.Name)
		return nil
	})
	if err != nil && !errors.Is(err, segments.ErrNotFound) {
		t.Fatal(err)
	}
	return out
}

// SegmentNames lists the object names of a container's segment container.
func SegmentNames(t testing.TB, c string) []string {
	t.Helper()
	var names []string
	for _, in := range SegmentInfos(t, c) {
		names = append(names, in.Name)
	}
	return names
}

// SwiftDownloadSHA256 downloads an object with the swift CLI (the reference
// client, which reads SLOs through the proxy) and returns its SHA-256.
func SwiftDownloadSHA256(t testing.TB, c, name string) string {
	t.Helper()
	cmd := exec.Command("swift", "download", c, name, "-o", "-")
	h := sha256.New()
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = h, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("swift download %s %s: %v: %s", c, name, err, errb.String())
	}
	return hex.EncodeToString(h.Sum(nil))
}

// procFile reads a /proc file of the daemon.
func (d *Daemon) procFile(name string) string {
	d.t.Helper()
	s, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(d.Cmd.Process.Pid), name))
	if err != nil {
		d.t.Fatal(err)
	}
	return string(s)
}

// PeakRSS is the daemon's peak resident set size so far (VmHWM), bytes.
func (d *Daemon) PeakRSS() int64 {
	d.t.Helper()
	for _, line := range strings.Split(d.procFile("status"), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	d.t.Fatal("no VmHWM in /proc/<pid>/status")
	return 0
}

// CPUSeconds is the daemon's user+system CPU time so far.
func (d *Daemon) CPUSeconds() float64 {
	d.t.Helper()
	s := d.procFile("stat")
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	sy, _ := strconv.ParseFloat(f[12], 64)
	return (u + sy) / 100 // USER_HZ
}

//go:build integration

// Package integration runs the real imagefs binary against the real Swift
// and Keystone of the lab (test/lab/lab.sh), through real FUSE mounts.
// These tests fail, never skip, when the lab or FUSE is missing.
//
//	test/lab/lab.sh up && eval "$(test/lab/lab.sh env)"
//	go test -tags integration ./test/integration/
package integration

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
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/auth"
	"github.com/imagefs/imagefs/segments"
)

var (
	binary string               // the imagefs binary under test
	swift  segments.ObjectStore // direct Swift access for setup and checks
	keeper *auth.Keeper
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
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
	dir, err := os.MkdirTemp("", "imagefs-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "imagefs")
	args := []string{"build", "-o", binary}
	if os.Getenv("IMAGEFS_TEST_RACE") == "1" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../../cmd/imagefs")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build imagefs: %v\n", err)
		return 1
	}
	ctx := context.Background()
	keeper, err = auth.New(ctx, labAuth(), slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab credentials do not work (is the lab up?): %v\n", err)
		return 1
	}
	raw := segments.NewSwiftStore(segments.SwiftOptions{Auth: keeper.Authenticator(), Transport: keeper.Transport(nil)})
	swift = &segments.Retrying{ObjectStore: raw, P: segments.RetryPolicy{Base: 100 * time.Millisecond, Cap: time.Second, Budget: 30 * time.Second}}
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go keeper.Run(kctx)
	return m.Run()
}

// labAuth is the demo user of the lab, from the OS_* environment.
func labAuth() auth.Config {
	return auth.Config{
		AuthURL:           os.Getenv("OS_AUTH_URL"),
		Username:          os.Getenv("OS_USERNAME"),
		Password:          auth.Secret(os.Getenv("OS_PASSWORD")),
		UserDomainName:    os.Getenv("OS_USER_DOMAIN_NAME"),
		ProjectName:       os.Getenv("OS_PROJECT_NAME"),
		ProjectDomainName: os.Getenv("OS_PROJECT_DOMAIN_NAME"),
		Region:            os.Getenv("OS_REGION_NAME"),
		Interface:         os.Getenv("OS_INTERFACE"),
	}
}

// newContainer creates a container for one test and removes it, with
// everything in it and in its segment container, when the test ends.
func newContainer(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("it-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), time.Now().UnixNano())
	if len(name) > 200 {
		name = name[:200]
	}
	if err := swift.CreateContainer(t.Context(), name); err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() { removeContainer(t, name); removeContainer(t, name+"_segments") })
	return name
}

func removeContainer(t *testing.T, c string) {
	ctx := context.Background()
	var names []string
	err := swift.List(ctx, c, "", 0, func(in segments.Info) error { names = append(names, in.Name); return nil })
	if errors.Is(err, segments.ErrNotFound) {
		return
	}
	if err == nil && len(names) > 0 {
		err = swift.DeleteMany(ctx, c, names)
	}
	if err != nil {
		t.Logf("cleanup of %s: %v", c, err)
		return
	}
	if out, err := exec.Command("swift", "delete", c).CombinedOutput(); err != nil {
		t.Logf("cleanup of %s: %v: %s", c, err, out)
	}
}

// daemon is a running imagefs mount.
type daemon struct {
	t     *testing.T
	dir   string
	cmd   *exec.Cmd
	log   string
	done  chan struct{}
	exit  error
	ended bool
}

// mountOpts tune a mount.
type mountOpts struct {
	args []string // extra flags
	env  []string // extra environment
}

// mount starts imagefs on a fresh directory and waits for the mount. The
// mount is stopped (SIGTERM, exit status 0 expected) when the test ends.
func mount(t *testing.T, target string, o mountOpts) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{t: t, dir: dir, log: filepath.Join(t.TempDir(), "imagefs.log"), done: make(chan struct{})}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"mount", "--log-level", "debug"}, o.args...)
	args = append(args, target, dir)
	d.cmd = exec.Command(binary, args...)
	d.cmd.Env = append(os.Environ(), o.env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exit = d.cmd.Wait(); logf.Close(); close(d.done) }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			d.dumpLog()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !mounted(dir) {
		select {
		case <-d.done:
			d.dumpLog()
			t.Fatalf("imagefs exited before mounting: %v", d.exit)
		default:
		}
		if time.Now().After(deadline) {
			d.dumpLog()
			t.Fatal("imagefs did not mount within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

func (d *daemon) path(name string) string { return filepath.Join(d.dir, name) }

// stop sends SIGTERM and expects a clean exit with the mount gone.
func (d *daemon) stop() {
	t := d.t
	if d.ended {
		return
	}
	d.ended = true
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(60 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
			t.Errorf("imagefs did not exit within 60 s of SIGTERM")
		}
	}
	if d.exit != nil {
		t.Errorf("imagefs exited with %v", d.exit)
	}
	if mounted(d.dir) {
		t.Errorf("%s still mounted after imagefs exited", d.dir)
		_ = syscall.Unmount(d.dir, syscall.MNT_DETACH)
	}
}

// kill ends the daemon with SIGKILL (a crash) and clears the dead mount.
func (d *daemon) kill() {
	d.ended = true
	_ = d.cmd.Process.Kill()
	<-d.done
	_ = syscall.Unmount(d.dir, syscall.MNT_DETACH)
}

func (d *daemon) logText() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

func (d *daemon) dumpLog() {
	text := d.logText()
	if len(text) > 20000 {
		text = "...\n" + text[len(text)-20000:]
	}
	d.t.Logf("imagefs log (%s):\n%s", d.log, text)
}

// mounted reports whether dir is a mountpoint.
func mounted(dir string) bool {
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

// randomFile writes size random bytes to a temp file and returns its path
// and SHA-256.
func randomFile(t *testing.T, size int64, seed uint64) (string, string) {
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

func sha256File(t *testing.T, p string) string {
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

// run runs a command and fails the test if it fails.
func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// putObject stores an object directly in Swift.
func putObject(t *testing.T, c, name string, data []byte, meta map[string]string) {
	t.Helper()
	if _, err := swift.Put(t.Context(), c, name, bytes.NewReader(data), int64(len(data)), "", segments.PutOptions{Meta: meta}); err != nil {
		t.Fatal(err)
	}
}

var _ = runtime.NumCPU

//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// unit is the [Service] section of systemd/imagefs@.service for one
// instance, with the unit's paths moved under a test directory.
type unit struct {
	env                       []string // Environment=
	cacheDir                  string   // CacheDirectory=, made absolute
	cacheMode                 os.FileMode
	startPre, start, stopPost [][]string // Exec*= command lines ("-" prefix dropped)
	killSignal                syscall.Signal
	reloadSignal              syscall.Signal // ExecReload=/bin/kill -HUP $MAINPID
	stopTimeout               time.Duration
}

// loadUnit reads the unit file as systemd would for instance inst, with
// /var/lib/ and /var/cache/ moved under root and /usr/local/bin/imagefs
// replaced by the binary under test. Only the directives the unit uses are
// understood; an unknown one in [Service] fails the test, so that a change
// of the unit is a change of this test.
func loadUnit(t *testing.T, inst, root string) unit {
	t.Helper()
	b, err := os.ReadFile("../../systemd/imagefs@.service")
	if err != nil {
		t.Fatal(err)
	}
	expand := func(s string) string {
		s = strings.ReplaceAll(s, "%i", inst)
		s = strings.ReplaceAll(s, "/usr/local/bin/imagefs", labtest.Binary)
		s = strings.ReplaceAll(s, "/var/lib/", root+"/lib/")
		return strings.ReplaceAll(s, "/var/cache/", root+"/cache/")
	}
	u := unit{cacheMode: 0o755}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			section = line
			continue
		}
		if section != "[Service]" {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		v = expand(v)
		argv := strings.Fields(strings.TrimPrefix(v, "-"))
		switch k {
		case "Type", "NotifyAccess", "Restart", "RestartSec", "EnvironmentFile":
			// The credentials of the env file are the lab's OS_* variables,
			// inherited from the test's environment.
		case "Environment":
			u.env = append(u.env, v)
		case "CacheDirectory":
			u.cacheDir = filepath.Join(root, "cache", v)
		case "CacheDirectoryMode":
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil {
				t.Fatalf("CacheDirectoryMode=%s: %v", v, err)
			}
			u.cacheMode = os.FileMode(m)
		case "ExecStartPre":
			u.startPre = append(u.startPre, argv)
		case "ExecStart":
			u.start = append(u.start, argv)
		case "ExecStopPost":
			u.stopPost = append(u.stopPost, argv)
		case "ExecReload":
			if strings.Join(argv, " ") != "/bin/kill -HUP $MAINPID" {
				t.Fatalf("ExecReload=%s: imagefs reloads its secret files on SIGHUP", v)
			}
			u.reloadSignal = syscall.SIGHUP
		case "KillSignal":
			if v != "SIGTERM" {
				t.Fatalf("KillSignal=%s: imagefs unmounts cleanly on SIGTERM and SIGINT", v)
			}
			u.killSignal = syscall.SIGTERM
		case "TimeoutStopSec":
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("TimeoutStopSec=%s: %v", v, err)
			}
			u.stopTimeout = time.Duration(n) * time.Second
		default:
			t.Fatalf("systemd/imagefs@.service: %s= is not understood by this test: teach loadUnit", k)
		}
	}
	if len(u.start) != 1 || u.killSignal == 0 || u.stopTimeout == 0 {
		t.Fatalf("unit: want one ExecStart=, KillSignal= and TimeoutStopSec=, got %+v", u)
	}
	return u
}

// syncBuffer is a bytes.Buffer that the daemon's output goroutine may
// write while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// service is one run of the unit's ExecStart.
type service struct {
	cmd    *exec.Cmd
	log    syncBuffer
	done   chan struct{}
	err    error
	notify *net.UnixConn
}

func (u unit) startService(t *testing.T, notify *net.UnixConn, sock string) *service {
	t.Helper()
	for _, argv := range u.startPre {
		labtest.RunCmd(t, argv[0], argv[1:]...)
	}
	s := &service{done: make(chan struct{}), notify: notify}
	argv := u.start[0]
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = append(append(os.Environ(), u.env...), "NOTIFY_SOCKET="+sock)
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// expectNotify waits for a datagram on the notify socket that says state.
func (s *service) expectNotify(t *testing.T, state string, within time.Duration) {
	t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(within)
	for {
		_ = s.notify.SetReadDeadline(deadline)
		n, err := s.notify.Read(buf)
		if err != nil {
			t.Fatalf("no %s from imagefs within %v: %v\nlog:\n%s", state, within, err, s.log.String())
		}
		if strings.Contains(string(buf[:n]), state) {
			return
		}
	}
}

func (s *service) wait(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(within):
		t.Fatalf("imagefs did not exit within %v\nlog:\n%s", within, s.log.String())
	}
}

// TestSystemdUnit runs systemd/imagefs@.service's commands the way systemd
// runs them (there is no systemd on the test machines): its environment and
// cache directory, Type=notify, a second start on a mounted mountpoint, a
// crash (SIGKILL) and the restart after it, and the stop by KillSignal.
func TestSystemdUnit(t *testing.T) {
	c := labtest.NewContainer(t)
	data := make([]byte, 3<<20+12345)
	rnd := rand.New(rand.NewPCG(7, 7))
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	labtest.PutObject(t, c, "disk.raw", data, nil)

	root := t.TempDir()
	u := loadUnit(t, c, root)
	mnt := filepath.Join(root, "lib", c) // /var/lib/%i
	if u.cacheDir == "" {
		t.Fatal("the unit has no CacheDirectory=")
	}
	if err := os.MkdirAll(u.cacheDir, u.cacheMode); err != nil { // systemd's job
		t.Fatal(err)
	}
	sock := filepath.Join(root, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })

	readBack := func(what string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(mnt, "disk.raw"))
		if err != nil {
			t.Fatalf("%s: read through the mount: %v", what, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: the file read through the mount differs from the object", what)
		}
	}

	// Start: READY=1 only once the mount is there.
	s := u.startService(t, notify, sock)
	s.expectNotify(t, "READY=1", 30*time.Second)
	if !labtest.Mounted(mnt) {
		t.Fatalf("READY=1 sent but %s is not mounted", mnt)
	}
	readBack("first start")

	// The unit turns the persistent block cache on.
	deadline := time.Now().Add(10 * time.Second)
	for cacheFiles(t, u.cacheDir) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no block in the unit's cache directory %s after a read\nlog:\n%s", u.cacheDir, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// systemctl reload (SIGHUP) reads the secret files again; the mount
	// goes on.
	if u.reloadSignal != 0 {
		if err := s.cmd.Process.Signal(u.reloadSignal); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(s.log.String(), "SIGHUP: ") {
			if time.Now().After(deadline) {
				t.Fatalf("no trace of the reload in the log:\n%s", s.log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		readBack("after systemctl reload")
	}

	// A second start on the mounted mountpoint is refused, clearly.
	startFails(t, u, "already has a filesystem mounted on it: unmount it first")

	// A crash leaves a dead mount, which refuses a new daemon until the
	// unit's ExecStopPost clears it; then the restart works, with the
	// data intact.
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.wait(t, 10*time.Second)
	startFails(t, u, "is a dead FUSE mount left by a daemon that exited without unmounting: unmount it first (umount -l "+mnt+")")
	// Right after the crash the kernel may still answer stat(2) from the
	// attributes it cached (imagefs then asks statfs(2)); once they
	// expire (--attr-ttl, 1s) stat itself fails: the same answer.
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(mnt); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the dead mount: %v, want ENOTCONN", err)
	}
	startFails(t, u, "is a dead FUSE mount left by a daemon that exited without unmounting: unmount it first (umount -l "+mnt+")")
	runStopPost(t, u)
	if labtest.Mounted(mnt) {
		t.Fatalf("%s still mounted after the unit's ExecStopPost", mnt)
	}
	s = u.startService(t, notify, sock)
	s.expectNotify(t, "READY=1", 30*time.Second)
	readBack("restart after a crash")

	// Stop: KillSignal, STOPPING=1, exit status 0 within TimeoutStopSec,
	// nothing left mounted; then ExecStopPost finds nothing to do.
	if err := s.cmd.Process.Signal(u.killSignal); err != nil {
		t.Fatal(err)
	}
	s.expectNotify(t, "STOPPING=1", 10*time.Second)
	s.wait(t, u.stopTimeout)
	if s.err != nil {
		t.Fatalf("imagefs exited with %v after %v\nlog:\n%s", s.err, u.killSignal, s.log.String())
	}
	if labtest.Mounted(mnt) {
		t.Fatalf("%s still mounted after a clean stop", mnt)
	}
	runStopPost(t, u)

	// --log-format json: every line the journal gets is one JSON object.
	lines := strings.Split(strings.TrimSpace(s.log.String()), "\n")
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("log line is not JSON: %q", l)
		}
	}
	if !strings.Contains(s.log.String(), `"msg":"mounted"`) {
		t.Fatalf("no \"mounted\" record in the log:\n%s", s.log.String())
	}
}

// startFails runs the unit's ExecStart, which must fail saying want.
func startFails(t *testing.T, u unit, want string) {
	t.Helper()
	argv := u.start[0]
	if argv[0] != labtest.Binary || argv[1] != "mount" {
		t.Fatalf("ExecStart runs %v, not imagefs mount", argv[:2])
	}
	labtest.MountFails(t, u.env, argv[2:], 1, want)
}

// runStopPost runs the unit's ExecStopPost lines, ignoring their failure
// as their "-" prefix says.
func runStopPost(t *testing.T, u unit) {
	t.Helper()
	for _, argv := range u.stopPost {
		_ = exec.Command(argv[0], argv[1:]...).Run()
	}
}

// cacheFiles counts the files in dir's subdirectories: the blocks (the
// cache's lock file is at the top).
func cacheFiles(t *testing.T, dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && filepath.Dir(p) != dir {
			n++
		}
		return nil
	})
	return n
}

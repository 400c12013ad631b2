//go:build integration

package integration

import (
	"bytes"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestWarm: `imagefs warm` fills the cache directory with a whole image,
// so that a remount with the same --cache-dir reads it with no data GET;
// a second warm fetches nothing; a directory warms its files; Ctrl-C
// stops the daemon's job; bad paths and a mount without --cache-dir get
// clear errors.
func TestWarm(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 131, Size: 48<<20 + 5}
	labtest.PutSLO(t, c, "vm.img", p, p.Size, 16<<20)
	q := labtest.Pattern{Seed: 132, Size: 3<<20 + 1}
	labtest.PutPlain(t, c, "dir/small.img", q, q.Size)
	cacheDir := t.TempDir()
	fp := labtest.NewFaultProxy(t)
	args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", cacheDir, "--cache-size", "1GiB", "--boot-traces=false"}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})

	r := labtest.Exec(t, "warm", d.Path("vm.img"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "warmed "+d.Path("vm.img")+": 48.0MiB cached, 48.0MiB fetched") ||
		!strings.Contains(r.Stderr, "of 48.0MiB cached") {
		t.Fatalf("warm: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	if _, b := fp.DataGETs(); b < p.Size || b > p.Size+1<<20 {
		t.Errorf("warm fetched %d bytes of a %d-byte image", b, p.Size)
	}
	if r := labtest.Exec(t, "warm", "--quiet", "--random-delay", "500ms", d.Dir+"/dir/"); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Errorf("warm --quiet of a directory: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := labtest.Exec(t, "warm", d.Path("vm.img")); r.Code != 0 || !strings.Contains(r.Stdout, "48.0MiB cached, 0B fetched") {
		t.Errorf("second warm: exit %d, %s%s", r.Code, r.Stdout, r.Stderr)
	}
	d.Stop()

	// The same cache directory, a fresh daemon: nothing from Swift.
	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	n0, _ := fp.DataGETs()
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != p.SHA256() {
		t.Fatalf("sha256 after warm %s, want %s", got, p.SHA256())
	}
	if got := labtest.SHA256File(t, d.Path("dir/small.img")); got != q.SHA256() {
		t.Fatalf("sha256 of small.img after warm %s, want %s", got, q.SHA256())
	}
	if n1, b := fp.DataGETs(); n1 != n0 {
		t.Errorf("reads after warm and remount made %d data GETs (%d bytes), want 0", n1-n0, b)
	}

	// Ctrl-C: the daemon's job stops (a slow warm of another image).
	big := labtest.Pattern{Seed: 133, Size: 64 << 20}
	labtest.PutSLO(t, c, "big.img", big, big.Size, 16<<20)
	cmd := exec.Command(labtest.Binary, "warm", "--rate", "4MiB", d.Path("big.img"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Once the daemon has the job (a busy machine may take seconds to
	// start the command: a SIGINT before it handles signals kills it).
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.LogText(), `msg="warm started" path=big.img`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not start the warm of big.img within 30 s")
		}
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err == nil || !strings.Contains(stderr.String(), "cancelled") {
		t.Errorf("warm after Ctrl-C: %v, %s", err, stderr.String())
	}
	time.Sleep(500 * time.Millisecond)
	_, b0 := fp.DataGETs()
	time.Sleep(time.Second)
	if _, b1 := fp.DataGETs(); b1 != b0 {
		t.Errorf("the daemon kept fetching %d bytes after the warm was cancelled", b1-b0)
	}
	if !strings.Contains(d.LogText(), `msg="warm failed" path=big.img`) {
		t.Errorf("the daemon did not log the stopped warm")
	}

	for _, tc := range []struct{ path, want string }{
		{d.Path("missing.img"), "does not exist"},
		{t.TempDir(), "is not on an imagefs mount"},
	} {
		r := labtest.Exec(t, "warm", tc.path)
		if r.Code == 0 || !strings.Contains(r.Stderr, tc.want) || strings.Contains(r.Stderr, "goroutine") {
			t.Errorf("warm %s: exit %d, %q; want %q", tc.path, r.Code, r.Stderr, tc.want)
		}
	}
	d.Stop()
	m := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--boot-traces=false"}})
	if r := labtest.Exec(t, "warm", m.Path("vm.img")); r.Code == 0 || !strings.Contains(r.Stderr, "warming needs --cache-dir") {
		t.Errorf("warm without --cache-dir: exit %d, %q", r.Code, r.Stderr)
	}
}

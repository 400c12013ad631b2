//go:build integration

package integration

import (
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestVerifiedReads: behind a proxy that flips a bit in every 64 KiB of
// the segment bodies Swift sends, reading an image through the mount fails
// with EIO (and a log line), never with wrong bytes; a mount with the same
// cache directory and a clean Swift then reads the right bytes (nothing
// bad was cached). Bodies flipped only once are fetched again and read
// right.
func TestVerifiedReads(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	w := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "4MiB"}})
	src, sum := labtest.RandomFile(t, 16<<20+333, 120)
	labtest.RunCmd(t, "cp", src, w.Path("x.img"))
	w.Stop()

	fp := labtest.NewFaultProxy(t)
	segmentGET := func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "_segments/") && !strings.Contains(r.URL.Path, "/.imagefs/")
	}
	fp.SetFault(func(r *http.Request) labtest.Fault {
		if segmentGET(r) {
			return labtest.Fault{Flip: 64 << 10}
		}
		return labtest.Fault{}
	})
	cache := t.TempDir()
	args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", cache}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	out, err := exec.Command("sha256sum", d.Path("x.img")).CombinedOutput()
	if err == nil || strings.Contains(string(out), sum) || !strings.Contains(string(out), "Input/output error") {
		t.Fatalf("sha256sum with corrupted bodies: %v: %s (want EIO)", err, out)
	}
	if strings.Contains(string(out), " ") && !strings.Contains(string(out), "error") {
		t.Fatalf("sha256sum gave a digest of corrupted bytes: %s", out)
	}
	if log := d.LogText(); !strings.Contains(log, "do not match their checksum") {
		t.Errorf("the log does not say why:\n%s", log)
	}
	d.Stop()

	fp.SetFault(nil)
	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if got := labtest.SHA256File(t, d.Path("x.img")); got != sum {
		t.Fatal("with a clean Swift and the same cache directory, the image reads wrong: bad bytes were cached")
	}
	d.Stop()

	// Once per segment object: the refetch reads right.
	var mu sync.Mutex
	seen := map[string]bool{}
	fp.SetFault(func(r *http.Request) labtest.Fault {
		if !segmentGET(r) {
			return labtest.Fault{}
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[r.URL.Path] {
			return labtest.Fault{}
		}
		seen[r.URL.Path] = true
		return labtest.Fault{Flip: 64 << 10}
	})
	d = labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL}})
	if got := labtest.SHA256File(t, d.Path("x.img")); got != sum {
		t.Fatal("with bodies flipped once, the image reads wrong")
	}
	if log := d.LogText(); !strings.Contains(log, "fetching them again") {
		t.Errorf("the log does not show the refetch:\n%s", log)
	}
}

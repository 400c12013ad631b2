//go:build integration

package integration

import (
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestWriteSurvivesFaults: a proxy between imagefs and Swift fails the
// first attempt of every segment PUT, of the manifest PUT and of HEADs, in
// turn with 503, a reset connection, 429 with Retry-After, 401 (a token
// Swift no longer takes), 500 and 408. The copy succeeds and the data is
// identical; every kind of fault was injected and retried.
func TestWriteSurvivesFaults(t *testing.T) {
	c := labtest.NewContainer(t)
	fp := labtest.NewFaultProxy(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL,
		"--segment-size", "4MiB", "--upload-workers", "3", "--retry-budget", "60s"}})
	faults := []labtest.Fault{
		{Status: http.StatusServiceUnavailable},
		{Reset: true},
		{Status: http.StatusTooManyRequests, RetryAfter: "1"},
		{Status: http.StatusUnauthorized},
		{Status: http.StatusInternalServerError},
		{Status: http.StatusRequestTimeout},
	}
	var mu sync.Mutex
	seen := map[string]int{}     // request -> attempts
	injected := map[string]int{} // fault kind -> count
	fp.SetFault(func(r *http.Request) labtest.Fault {
		manifest := r.Method == http.MethodPut && r.URL.Query().Get("multipart-manifest") == "put"
		if !labtest.IsSegmentPut(r) && !manifest && r.Method != http.MethodHead {
			return labtest.Fault{}
		}
		mu.Lock()
		defer mu.Unlock()
		key := r.Method + " " + r.URL.Path
		seen[key]++
		if seen[key] > 1 {
			return labtest.Fault{} // the retry goes through
		}
		f := faults[len(seen)%len(faults)]
		kind := "reset"
		if !f.Reset {
			kind = http.StatusText(f.Status)
		}
		injected[kind]++
		return f
	})
	src, sum := labtest.RandomFile(t, 60<<20+12345, 21)
	labtest.RunCmd(t, "cp", src, d.Path("vm.img"))
	fp.SetFault(nil)

	mu.Lock()
	t.Logf("faults injected: %v over %d requests", injected, len(seen))
	if len(injected) != len(faults) {
		t.Errorf("not every kind of fault was injected: %v", injected)
	}
	mu.Unlock()
	if got := labtest.SwiftDownloadSHA256(t, c, "vm.img"); got != sum {
		t.Errorf("sha256 through swift download %s, want %s", got, sum)
	}
	in, err := labtest.Swift.Head(t.Context(), c, "vm.img")
	if err != nil || in.Meta["sha256"] != sum || !in.SLO {
		t.Errorf("metadata after faults: %+v %v", in, err)
	}
	if st, err := os.Stat(d.Path("vm.img")); err != nil || st.Size() != 60<<20+12345 {
		t.Errorf("stat: %v %v", st, err)
	}
	log := d.LogText()
	if n := strings.Count(log, `msg=retrying`); n == 0 {
		t.Error("no retry was logged")
	}
	honoured := false
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=retrying") && strings.Contains(l, "HTTP 429") && strings.Contains(l, "wait=1s") {
			honoured = true
		}
	}
	if !honoured {
		t.Error("no retry after a 429 waited the 1 s of its Retry-After")
	}
	if !strings.Contains(log, "Swift answered 401") {
		t.Error("the 401s did not reach the token keeper")
	}
	if strings.Contains(log, "segment upload failed") {
		t.Error("a segment upload failed for good")
	}
}

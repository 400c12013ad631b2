//go:build integration

package integration

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

func isDataGET(r *http.Request) bool {
	return r.Method == http.MethodGet && r.Header.Get("Range") != ""
}

// TestReadSurvivesFaults: resets mid-body, a body that stalls, 5xx, 429
// with Retry-After and a 401 on the GETs of a read: the data is intact.
func TestReadSurvivesFaults(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 80, Size: 40<<20 + 777}
	labtest.PutSLO(t, c, "vm.img", p, p.Size, 8<<20+4096)
	fp := labtest.NewFaultProxy(t)
	var n atomic.Int64
	kinds := map[string]*atomic.Int64{"401": {}, "reset": {}, "stall": {}, "503": {}, "429": {}}
	fp.SetFault(func(r *http.Request) labtest.Fault {
		if !isDataGET(r) {
			return labtest.Fault{}
		}
		k := n.Add(1)
		switch {
		case k == 1:
			kinds["401"].Add(1)
			return labtest.Fault{Status: http.StatusUnauthorized}
		case k == 3:
			kinds["stall"].Add(1)
			return labtest.Fault{CutAfter: 50 << 10, Stall: time.Minute}
		case k%5 == 0:
			kinds["reset"].Add(1)
			return labtest.Fault{CutAfter: 100<<10 + k}
		case k%5 == 2:
			kinds["503"].Add(1)
			return labtest.Fault{Status: http.StatusServiceUnavailable}
		case k%7 == 4:
			kinds["429"].Add(1)
			return labtest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "1"}
		}
		return labtest.Fault{}
	})
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL, "--read-stall-timeout", "2s"}})
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != p.SHA256() {
		t.Errorf("sha256 through faults %s, want %s", got, p.SHA256())
	}
	for k, v := range kinds {
		if v.Load() == 0 {
			t.Errorf("no %s fault was injected", k)
		}
	}
	log := d.LogText()
	if !strings.Contains(log, "response body stalled") {
		t.Error("the stalled body was not cut by the stall timeout")
	}
	if strings.Contains(log, "operation failed") {
		t.Error("a read failed although every fault was transient")
	}
}

// TestReadFailsAfterRetryBudget: when Swift keeps failing, a read fails
// with EIO once the retry budget is spent, with one error line in the log,
// and works again when Swift is back.
func TestReadFailsAfterRetryBudget(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 81, Size: 4 << 20}
	labtest.PutPlain(t, c, "vm.img", p, p.Size)
	fp := labtest.NewFaultProxy(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL, "--retry-budget", "3s"}})
	fp.SetFault(func(r *http.Request) labtest.Fault {
		if isDataGET(r) {
			return labtest.Fault{Status: http.StatusBadGateway}
		}
		return labtest.Fault{}
	})
	f := labtest.OpenDirect(t, d.Path("vm.img"))
	start := time.Now()
	_, err := f.ReadAt(make([]byte, 64<<10), 1<<20)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read while Swift fails: %v, want EIO", err)
	}
	if el := time.Since(start); el < 500*time.Millisecond || el > 30*time.Second {
		t.Errorf("the read failed after %v with a 3 s retry budget", el)
	}
	log := d.LogText()
	if n := strings.Count(log, `msg="operation failed"`); n != 1 {
		t.Errorf("%d error lines for one failed read, want 1", n)
	}
	if !strings.Contains(log, "retrying") || !strings.Contains(log, "502") {
		t.Error("the retries are not in the log")
	}
	fp.SetFault(nil)
	buf := make([]byte, 64<<10)
	if _, err := f.ReadAt(buf, 1<<20); err != nil || string(buf) != string(p.Bytes(1<<20, 64<<10)) {
		t.Errorf("read after Swift recovered: %v", err)
	}
}

// TestReadStaleAfterOverwrite: an object overwritten while it is open
// gives ESTALE on the next read that reaches Swift, never mixed data; a
// new open reads the new version.
func TestReadStaleAfterOverwrite(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	v1 := labtest.Pattern{Seed: 82, Size: 8 << 20}
	v2 := labtest.Pattern{Seed: 83, Size: 8 << 20}
	labtest.PutPlain(t, c, "vm.img", v1, v1.Size)
	d := labtest.Mount(t, c, labtest.MountOpts{})
	f := labtest.OpenDirect(t, d.Path("vm.img"))
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != string(v1.Bytes(0, 4096)) {
		t.Fatalf("first read: %v", err)
	}
	labtest.PutPlain(t, c, "vm.img", v2, v2.Size)
	if _, err := f.ReadAt(buf, 6<<20); !errors.Is(err, syscall.ESTALE) {
		t.Errorf("read after an overwrite: %v, want ESTALE", err)
	}
	time.Sleep(1100 * time.Millisecond) // the attribute cache
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != v2.SHA256() {
		t.Error("a new open does not read the new version")
	}
}

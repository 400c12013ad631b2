//go:build integration

package integration

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestKeystoneOutageDuringCopy stops Keystone for a minute in the middle
// of a copy, right after the keeper renewed its token: the worst moment,
// because Swift has never seen the new token and cannot validate it
// without Keystone (it answers 401), while the previous token is still in
// its cache. The keeper falls back to the previous token, keeps retrying
// Keystone with backoff, and the copy succeeds with identical data.
//
// Not parallel: while Keystone is stopped every test needing a new token
// would fail. /work/keystone-outage exists meanwhile.
func TestKeystoneOutageDuringCopy(t *testing.T) {
	const outage = 60 * time.Second
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "1MiB"}})
	mounted := time.Now()
	const size = 16 << 20
	src, sum := labtest.RandomFile(t, size, 77)

	// The copy writes 128 KiB/s, but pauses around the renewal so that no
	// request makes Swift see (and cache) the new token before Keystone
	// stops.
	var pause sync.Mutex
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := os.Create(d.Path("vm.img"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	// If the test fails, the writer stops and its file is closed before
	// the mount is stopped (cleanups run in reverse order).
	copied := make(chan error, 1)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-copied:
			copied <- err
		case <-time.After(time.Minute):
		}
	})
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, rerr := f.Read(buf)
			if n > 0 {
				pause.Lock()
				_, werr := out.Write(buf[:n])
				pause.Unlock()
				if werr != nil {
					out.Close()
					copied <- werr
					return
				}
			}
			if rerr != nil {
				copied <- out.Close()
				return
			}
			select {
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
				out.Close()
				copied <- ctx.Err()
				return
			}
		}
	}()

	// Pause before the first renewal (54-60% into the lifetime), wait for it.
	lifetime := labtest.TokenLifetime(t)
	time.Sleep(time.Until(mounted.Add(lifetime * 40 / 100)))
	pause.Lock()
	paused := true
	resume := func() {
		if paused {
			paused = false
			pause.Unlock()
		}
	}
	defer resume()
	deadline := time.Now().Add(lifetime / 2)
	for !strings.Contains(d.LogText(), "keystone token renewed") {
		if time.Now().After(deadline) {
			t.Fatal("no renewal in the daemon's log")
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := labtest.StopKeystone(t)
	stopped := time.Now()
	t.Logf("Keystone stopped %v after mounting", stopped.Sub(mounted).Round(time.Second))
	resume()
	time.Sleep(time.Until(stopped.Add(outage)))
	start()
	t.Logf("Keystone back after %v", time.Since(stopped).Round(time.Second))

	if err := <-copied; err != nil {
		t.Fatalf("the copy failed: %v", err)
	}
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != sum {
		t.Errorf("sha256 through the mount %s, want %s", got, sum)
	}
	d.Stop()
	st := d.KeeperStats()
	t.Logf("keeper: %+v", st)
	for _, line := range strings.Split(d.LogText(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.Contains(line, "renewed") {
			t.Log(line)
		}
	}
	if st.Failures == 0 {
		t.Error("no renewal failed: was Keystone really down?")
	}
	if st.Fallbacks == 0 || !strings.Contains(d.LogText(), "using the previous token") {
		t.Error("the keeper never fell back to the previous token")
	}
	if st.Renewals < 2 {
		t.Errorf("%d renewals: the keeper did not renew after the outage", st.Renewals)
	}
}

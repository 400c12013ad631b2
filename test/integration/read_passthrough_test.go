//go:build integration

package integration

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// metric is the value of one sample of a daemon's /metrics (name with
// its labels as exposed, e.g. `imagefs_fuse_operation_duration_seconds_count{op="read"}`);
// 0 when absent.
func metric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(httpGet(t, "http://"+addr+"/metrics")))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	return 0
}

// waitMetric waits until a sample reaches want.
func waitMetric(t *testing.T, addr, sample string, want float64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if metric(t, addr, sample) >= want {
			return
		}
	}
	t.Fatalf("%s is %v after 30 s, want %v", sample, metric(t, addr, sample), want)
}

const fuseReads = `imagefs_fuse_operation_duration_seconds_count{op="read"}`

// TestReadPassthrough: an image read whole is assembled in --cache-dir
// and its next opens are passed through: the kernel reads the cache's
// file (buffered and O_DIRECT, with dd and fio), no READ reaches the
// daemon, no GET reaches Swift, the bytes are the image's. An overwrite
// from another mount is read anew through the daemon (never the stale
// file), and passed through again once whole. A whole file damaged while
// unmounted is discarded at the next mount and the image fetched again.
func TestReadPassthrough(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 140, Size: 48<<20 + 4096}
	labtest.PutSLO(t, c, "vm.img", p, p.Size, 16<<20)
	cacheDir := t.TempDir()
	fp := labtest.NewFaultProxy(t)
	addr := freeAddr(t)
	args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", cacheDir, "--cache-size", "1GiB", "--metrics-addr", addr, "--passthrough"}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if !strings.Contains(d.LogText(), "FUSE passthrough available") {
		t.Fatalf("passthrough is not available on this machine (Linux 6.9+ as root needed):\n%s", d.LogText())
	}
	img := d.Path("vm.img")
	if got := labtest.SHA256File(t, img); got != p.SHA256() {
		t.Fatal("first read: wrong data")
	}
	waitMetric(t, addr, "imagefs_cache_whole_images", 1)

	// Passed through: buffered, then O_DIRECT with dd and with fio.
	n0, _ := fp.DataGETs()
	reads := metric(t, addr, fuseReads)
	if got := labtest.SHA256File(t, img); got != p.SHA256() {
		t.Error("passthrough read: wrong data")
	}
	out := labtest.RunCmd(t, "sh", "-c", `dd if="$1" iflag=direct bs=1M status=none | sha256sum`, "sh", img)
	if !strings.HasPrefix(out, p.SHA256()) {
		t.Errorf("O_DIRECT read (dd) through passthrough: sha256 %s", out)
	}
	for _, engine := range []string{"libaio", "io_uring"} { // qemu's aio=native, aio=io_uring
		labtest.RunCmd(t, "fio", "--name=pt", "--filename="+img, "--readonly", "--rw=randread", "--bs=4k", "--direct=1",
			"--ioengine="+engine, "--iodepth=16", "--size=16m", "--output-format=terse")
	}
	if got := metric(t, addr, fuseReads) - reads; got != 0 {
		t.Errorf("%v READ requests reached the daemon for a passed-through image", got)
	}
	if n1, b := fp.DataGETs(); n1 != n0 {
		t.Errorf("%d GETs (%d bytes) for an image whole in the cache", n1-n0, b)
	}
	if metric(t, addr, "imagefs_passthrough_opens_total") < 4 {
		t.Errorf("passthrough opens %v, want at least 4", metric(t, addr, "imagefs_passthrough_opens_total"))
	}

	// Overwritten from another mount: the new version is read through
	// the daemon (new bytes), then passed through once whole.
	const size2 = 40<<20 + 1
	other := labtest.Mount(t, c, labtest.MountOpts{})
	src, sum := labtest.RandomFile(t, size2, 142)
	labtest.RunCmd(t, "cp", src, other.Path("vm.img"))
	other.Stop()
	time.Sleep(1100 * time.Millisecond) // the attribute cache
	opens := metric(t, addr, "imagefs_passthrough_opens_total")
	reads = metric(t, addr, fuseReads)
	if got := labtest.SHA256File(t, img); got != sum {
		t.Fatal("after an overwrite from another mount, the old version was served")
	}
	if metric(t, addr, "imagefs_passthrough_opens_total") != opens || metric(t, addr, fuseReads) == reads {
		t.Error("the new version was passed through before it was whole in the cache")
	}
	waitMetric(t, addr, "imagefs_cache_whole_images", 2)
	reads = metric(t, addr, fuseReads)
	if got := labtest.SHA256File(t, img); got != sum || metric(t, addr, fuseReads) != reads {
		t.Error("the new version, whole, was not passed through")
	}
	d.Stop()

	// Damage the new version's whole file while unmounted: discarded at
	// the mount, fetched again, right.
	wholes, _ := filepath.Glob(filepath.Join(cacheDir, "whole-v1", "*", "*"))
	var damaged int
	for _, w := range wholes {
		if strings.Contains(filepath.Base(w), ".") {
			continue
		}
		fh, err := os.OpenFile(w, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := []byte{0}
		fh.ReadAt(b, 12345)
		b[0] ^= 0x20
		fh.WriteAt(b, 12345)
		fh.Close()
		damaged++
	}
	if damaged != 2 {
		t.Fatalf("%d whole files in the cache, want 2: %v", damaged, wholes)
	}
	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	n0, _ = fp.DataGETs()
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != sum {
		t.Error("after damaging the whole file: wrong data")
	}
	if n1, b := fp.DataGETs(); n1 == n0 || b < size2 {
		t.Errorf("a damaged whole file: %d GETs, %d bytes fetched again", n1-n0, b)
	}
	if !strings.Contains(d.LogText(), "discarding a whole-image cache file") {
		t.Error("the damaged whole file is not in the log")
	}
}

//go:build integration

package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// TestReadPassthrough: with --cache-dir, passthrough is on by default. An
// image read whole is assembled in --cache-dir and its next opens are
// passed through: the kernel reads the cache's file (buffered and
// O_DIRECT, with dd and fio), no READ reaches the daemon, no GET reaches
// Swift, the bytes are the image's, and the file keeps its inode number.
// While an open passes through version A: an overwrite through the mount
// succeeds at once and a new open reads the new version B; another host's
// version C is read by a new open after the TTL (never the stale file),
// through the daemon, then passed through once whole; each time the name
// gets a new inode number and the open ones keep theirs, their version and
// their size. A whole file damaged while unmounted is discarded at the next
// mount and the image fetched again; --passthrough=false reads through the
// daemon.
func TestReadPassthrough(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	p := labtest.Pattern{Seed: 140, Size: 48<<20 + 4096}
	labtest.PutSLO(t, c, "vm.img", p, p.Size, 16<<20)
	cacheDir := t.TempDir()
	fp := labtest.NewFaultProxy(t)
	addr := freeAddr(t)
	args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", cacheDir, "--cache-size", "1GiB", "--metrics-addr", addr}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	// labtest.Mount returns once the mount is there; the probe for
	// passthrough follows it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !strings.Contains(d.LogText(), "FUSE passthrough"); {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(d.LogText(), "FUSE passthrough available") {
		t.Fatalf("passthrough is not available on this machine (Linux 6.9+ as root needed):\n%s", d.LogText())
	}
	img := d.Path("vm.img")
	if got := labtest.SHA256File(t, img); got != p.SHA256() {
		t.Fatal("first read: wrong data")
	}
	inoA := inoOf(t, img)
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
	if ino := inoOf(t, img); ino != inoA {
		t.Errorf("passing through changed the inode number: %d, was %d", ino, inoA)
	}

	// A VM's open of A, kept open.
	opens := metric(t, addr, "imagefs_passthrough_opens_total")
	heldA, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer heldA.Close()
	if metric(t, addr, "imagefs_passthrough_opens_total") != opens+1 {
		t.Fatal("the held open of A is not passed through")
	}
	// A listing (READDIRPLUS) of the unchanged image keeps its inode (an
	// SLO's listing ETag is not its HEAD's).
	time.Sleep(1100 * time.Millisecond)
	labtest.RunCmd(t, "ls", "-l", d.Dir)
	if ino := inoOf(t, img); ino != inoA || metric(t, addr, "imagefs_passthrough_new_inodes_total") != 0 {
		t.Errorf("a listing renumbered the unchanged image: inode %d, was %d", ino, inoA)
	}

	// (a) Overwritten through the mount, within the entry TTL of the held
	// open: no EBUSY, no wait for it; a new open reads B.
	const sizeB = 40<<20 + 1
	srcB, sumB := labtest.RandomFile(t, sizeB, 142)
	start := time.Now()
	labtest.RunCmd(t, "cp", srcB, img)
	t.Logf("overwrite next to a passed-through open: %v", time.Since(start).Round(time.Millisecond))
	if got := labtest.SHA256File(t, img); got != sumB {
		t.Fatal("after an overwrite through the mount, a new open does not read the new version")
	}
	checkHeld(t, heldA, p.SHA256(), p.Size, inoA)
	inoB := inoOf(t, img)
	if inoB == inoA {
		t.Errorf("the overwritten name kept the passed-through inode %d", inoA)
	}
	if n := metric(t, addr, "imagefs_passthrough_new_inodes_total"); n != 1 {
		t.Errorf("imagefs_passthrough_new_inodes_total %v, want 1", n)
	}
	waitMetric(t, addr, "imagefs_cache_whole_images", 2)
	heldB := openPassedThrough(t, addr, img)
	defer heldB.Close()

	// (b) Another host replaces it with C: after the TTL, a new open
	// reads C through the daemon (not whole here yet), then passed
	// through once whole.
	const sizeC = 24<<20 + 3
	other := labtest.Mount(t, c, labtest.MountOpts{})
	srcC, sumC := labtest.RandomFile(t, sizeC, 143)
	labtest.RunCmd(t, "cp", srcC, other.Path("vm.img"))
	other.Stop()
	time.Sleep(1100 * time.Millisecond) // the attribute and entry TTL
	opens = metric(t, addr, "imagefs_passthrough_opens_total")
	reads = metric(t, addr, fuseReads)
	if got := labtest.SHA256File(t, img); got != sumC {
		t.Fatal("after an overwrite from another mount, the old version was served")
	}
	if metric(t, addr, "imagefs_passthrough_opens_total") != opens || metric(t, addr, fuseReads) == reads {
		t.Error("the new version was passed through before it was whole in the cache")
	}
	inoC := inoOf(t, img)
	if inoC == inoA || inoC == inoB {
		t.Errorf("another host's version has inode %d, a passed-through one's (A %d, B %d)", inoC, inoA, inoB)
	}
	checkHeld(t, heldA, p.SHA256(), p.Size, inoA)
	checkHeld(t, heldB, sumB, sizeB, inoB)
	waitMetric(t, addr, "imagefs_cache_whole_images", 3)
	reads = metric(t, addr, fuseReads)
	if got := labtest.SHA256File(t, img); got != sumC || metric(t, addr, fuseReads) != reads {
		t.Error("the new version, whole, was not passed through")
	}
	if n := metric(t, addr, "imagefs_passthrough_new_inodes_total"); n != 2 {
		t.Errorf("imagefs_passthrough_new_inodes_total %v, want 2", n)
	}
	heldA.Close()
	heldB.Close()
	d.Stop()

	// Damage the whole files while unmounted: discarded at the mount,
	// fetched again, right.
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
	if damaged != 3 {
		t.Fatalf("%d whole files in the cache, want 3: %v", damaged, wholes)
	}
	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	n0, _ = fp.DataGETs()
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != sumC {
		t.Error("after damaging the whole file: wrong data")
	}
	if n1, b := fp.DataGETs(); n1 == n0 || b < sizeC {
		t.Errorf("a damaged whole file: %d GETs, %d bytes fetched again", n1-n0, b)
	}
	if !strings.Contains(d.LogText(), "discarding a whole-image cache file") {
		t.Error("the damaged whole file is not in the log")
	}
	waitMetric(t, addr, "imagefs_cache_whole_images", 1)
	d.Stop()

	// --passthrough=false: the whole file is read through the daemon.
	d = labtest.Mount(t, c, labtest.MountOpts{Args: append(args, "--passthrough=false")})
	reads = metric(t, addr, fuseReads)
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != sumC {
		t.Error("--passthrough=false: wrong data")
	}
	if metric(t, addr, "imagefs_passthrough_opens_total") != 0 || metric(t, addr, fuseReads) == reads {
		t.Error("--passthrough=false: passed through")
	}
}

// openPassedThrough opens p for reading, passed through: the RELEASE of an
// open through the daemon closed just before may still be on its way (the
// kernel does not mix the two on one inode), so it tries again meanwhile.
func openPassedThrough(t *testing.T, addr, p string) *os.File {
	t.Helper()
	for range 100 {
		n := metric(t, addr, "imagefs_passthrough_opens_total")
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if metric(t, addr, "imagefs_passthrough_opens_total") > n {
			return f
		}
		f.Close()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not passed through", p)
	return nil
}

// checkHeld checks an open file: its bytes, size and inode number.
func checkHeld(t *testing.T, f *os.File, sum string, size int64, ino uint64) {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		t.Fatalf("read the held open: %v", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		t.Errorf("the held open reads another version (sha256 %s, want %s)", got, sum)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Ino != ino {
		t.Errorf("fstat of the held open: size %d inode %d, want %d %d", st.Size, st.Ino, size, ino)
	}
}

func inoOf(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/test/labtest"
)

// checkImage verifies a file written through the mount: its size, its
// SHA-256 read back through the mount and through `swift download`, the
// SHA-256 metadata and xattr, the mtime metadata and the content type.
func checkImage(t *testing.T, d *labtest.Daemon, c, name string, size int64, sum, ctype string) {
	t.Helper()
	st, err := os.Stat(d.Path(name))
	if err != nil || st.Size() != size {
		t.Fatalf("stat %s: %v, %v (want size %d)", name, st, err, size)
	}
	if got := labtest.SHA256File(t, d.Path(name)); got != sum {
		t.Errorf("%s: sha256 through the mount %s, want %s", name, got, sum)
	}
	if got := labtest.SwiftDownloadSHA256(t, c, name); got != sum {
		t.Errorf("%s: sha256 through swift download %s, want %s", name, got, sum)
	}
	in, err := labtest.Swift.Head(t.Context(), c, name)
	if err != nil {
		t.Fatal(err)
	}
	if in.Meta["sha256"] != sum {
		t.Errorf("%s: X-Object-Meta-Sha256 %q, want %q", name, in.Meta["sha256"], sum)
	}
	if x := strings.TrimSpace(labtest.RunCmd(t, "getfattr", "--absolute-names", "--only-values", "-n", fs.XattrSHA256, d.Path(name))); x != sum {
		t.Errorf("%s: xattr %s = %q, want %q", name, fs.XattrSHA256, x, sum)
	}
	secs, err := strconv.ParseFloat(in.Meta["mtime"], 64)
	if err != nil || time.Since(time.Unix(int64(secs), 0)).Abs() > 10*time.Minute {
		t.Errorf("%s: X-Object-Meta-Mtime %q", name, in.Meta["mtime"])
	}
	if in.ContentType != ctype {
		t.Errorf("%s: content type %q, want %q", name, in.ContentType, ctype)
	}
}

// TestWriteLargeFiles: a 1 GiB and a 3 GiB random image copied at the same
// time with the default settings read back identically through the mount
// and through the swift CLI, with their metadata.
func TestWriteLargeFiles(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{})
	for _, tc := range []struct {
		name  string
		size  int64
		ctype string
	}{
		{"one.qcow2", 1 << 30, "application/x-qemu-disk"},
		{"three.img", 3 << 30, "application/octet-stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, sum := labtest.RandomFile(t, tc.size, uint64(tc.size>>20))
			start := time.Now()
			labtest.RunCmd(t, "cp", src, d.Path(tc.name))
			t.Logf("cp of %d MiB: %v", tc.size>>20, time.Since(start).Round(time.Millisecond))
			os.Remove(src)
			checkImage(t, d, c, tc.name, tc.size, sum, tc.ctype)
		})
	}
}

// TestWriteConcurrentCopies: more files copied at once than the memory
// budget has segments for; each writer waits for memory, none fails, and
// all files are intact.
func TestWriteConcurrentCopies(t *testing.T) {
	c := labtest.NewContainer(t)
	// Budget: (1+1) × 4 MiB = 8 chunks of 1 MiB for 6 writers.
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "4MiB", "--upload-workers", "1"}})
	const n = 6
	var wg sync.WaitGroup
	sums := make([]string, n)
	srcs := make([]string, n)
	for i := range n {
		srcs[i], sums[i] = labtest.RandomFile(t, int64(20<<20+i*12345), uint64(100+i))
	}
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			out, err := exec.Command("cp", srcs[i], d.Path(fmt.Sprintf("f%d.img", i))).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("cp %d: %v: %s", i, err, out)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("concurrent copies hang: the memory budget deadlocked")
	}
	// Memory: the write budget (8 MiB here) plus a small constant, not
	// six files' worth of segments.
	if rss := d.PeakRSS(); rss > 8<<20+64<<20 {
		t.Errorf("peak RSS %d MiB for a write budget of 8 MiB", rss>>20)
	} else {
		t.Logf("peak RSS %d MiB (write budget 8 MiB)", rss>>20)
	}
	for i := range n {
		if errs[i] != nil {
			t.Error(errs[i])
			continue
		}
		name := fmt.Sprintf("f%d.img", i)
		if got := labtest.SHA256File(t, d.Path(name)); got != sums[i] {
			t.Errorf("%s differs", name)
		}
	}
}

// TestWriteSparse: `cp --sparse=always` of a sparse raw image (data, big
// holes, a size that ends in a hole) gives an identical file, and the holes
// are neither uploaded nor held in memory.
func TestWriteSparse(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "8MiB"}})
	src := filepath.Join(t.TempDir(), "sparse.raw")
	data, _ := labtest.RandomFile(t, 3<<20, 7)
	const size = 4<<30 + 4096 // 4 GiB, ends in a hole
	labtest.RunCmd(t, "truncate", "-s", strconv.Itoa(size), src)
	for _, mib := range []int{0, 1000, 3001} { // 3 MiB of data at 0, ~1 GiB, ~3 GiB
		labtest.RunCmd(t, "dd", "if="+data, "of="+src, "bs=1M", "seek="+strconv.Itoa(mib), "conv=notrunc", "status=none")
	}
	sum := labtest.SHA256File(t, src)
	start := time.Now()
	labtest.RunCmd(t, "cp", "--sparse=always", src, d.Path("sparse.raw"))
	t.Logf("cp --sparse=always of a 4 GiB image with 9 MiB of data: %v", time.Since(start).Round(time.Millisecond))
	st, err := os.Stat(d.Path("sparse.raw"))
	if err != nil || st.Size() != size {
		t.Fatalf("stat: %v %v", st, err)
	}
	// Uploaded bytes: the data segments plus one zero segment, not 10 GiB.
	var uploaded int64
	for _, in := range labtest.SegmentInfos(t, c) {
		if !strings.Contains(in.Name, "/manifest-") { // sub-manifests list the bytes they reference
			uploaded += in.Size
		}
	}
	if uploaded > 64<<20 {
		t.Errorf("%d MiB uploaded for 9 MiB of data", uploaded>>20)
	}
	if got := labtest.SwiftDownloadSHA256(t, c, "sparse.raw"); got != sum {
		t.Errorf("sha256 through swift download %s, want %s", got, sum)
	}
	in, err := labtest.Swift.Head(t.Context(), c, "sparse.raw")
	if err != nil || in.Meta["sha256"] != sum {
		t.Errorf("sha256 metadata %q, want %q (%v)", in.Meta["sha256"], sum, err)
	}
}

// TestWriteShellTools: the everyday ways of writing a file work.
func TestWriteShellTools(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--segment-size", "4MiB"}})
	sh := func(script string) {
		t.Helper()
		cmd := exec.Command("bash", "-euc", script)
		cmd.Dir = d.Dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", script, err, out)
		}
	}
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(d.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	sh("echo hello > a.txt")
	if got := read("a.txt"); got != "hello\n" {
		t.Errorf("echo >: %q", got)
	}
	sh("echo bye > a.txt") // overwrite
	if got := read("a.txt"); got != "bye\n" {
		t.Errorf("echo > again: %q", got)
	}
	sh("echo more >> a.txt") // append: a new version that starts from the old one
	if got := read("a.txt"); got != "bye\nmore\n" {
		t.Errorf("echo >>: %q", got)
	}
	sh("echo bye > a.txt")
	sh("cat a.txt > b.txt")
	if got := read("b.txt"); got != "bye\n" {
		t.Errorf("cat >: %q", got)
	}
	sh("touch empty.img")
	if st, err := os.Stat(d.Path("empty.img")); err != nil || st.Size() != 0 {
		t.Errorf("touch: %v %v", st, err)
	}
	if _, err := labtest.Swift.Head(t.Context(), c, "empty.img"); err != nil {
		t.Errorf("touch did not create the object: %v", err)
	}
	sh("touch b.txt") // an existing file: times only, content kept
	if got := read("b.txt"); got != "bye\n" {
		t.Errorf("touch of an existing file changed it: %q", got)
	}
	sh("truncate -s 10M grown.img && truncate -s 12M grown.img")
	if st, err := os.Stat(d.Path("grown.img")); err != nil || st.Size() != 12<<20 {
		t.Errorf("truncate -s: %v %v", st, err)
	}
	src, sum := labtest.RandomFile(t, 9<<20+7, 8)
	sh("dd if=" + src + " of=dd.img bs=1M status=none")
	if got := labtest.SHA256File(t, d.Path("dd.img")); got != sum {
		t.Error("dd: content differs")
	}
	sh("dd if=" + src + " of=dd2.img bs=64k oflag=direct status=none")
	if got := labtest.SHA256File(t, d.Path("dd2.img")); got != sum {
		t.Error("dd oflag=direct: content differs")
	}
	sh("cp " + src + " cp.img && cp cp.img copy-of-cp.img")
	if got := labtest.SHA256File(t, d.Path("copy-of-cp.img")); got != sum {
		t.Error("cp within the mount: content differs")
	}
}

// TestWriteWithoutSHA256: --sha256=false writes the same data without the
// sha256 metadata and xattr.
func TestWriteWithoutSHA256(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--sha256=false"}})
	src, sum := labtest.RandomFile(t, 70<<20+3, 12)
	labtest.RunCmd(t, "cp", src, d.Path("nosum.raw"))
	if got := labtest.SwiftDownloadSHA256(t, c, "nosum.raw"); got != sum {
		t.Fatalf("sha256 through swift download %s, want %s", got, sum)
	}
	in, err := labtest.Swift.Head(t.Context(), c, "nosum.raw")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := in.Meta["sha256"]; ok {
		t.Errorf("X-Object-Meta-Sha256 %q with --sha256=false", v)
	}
	if out, err := exec.Command("getfattr", "--absolute-names", "--only-values", "-n", fs.XattrSHA256, d.Path("nosum.raw")).CombinedOutput(); err == nil {
		t.Errorf("xattr %s = %q with --sha256=false", fs.XattrSHA256, out)
	}
}

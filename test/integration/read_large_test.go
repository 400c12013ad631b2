//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestReadLargeImages: a 1 GiB plain object and a 3 GiB SLO whose
// segments are not aligned to anything (100,000,000 bytes), uploaded
// directly, read back whole (SHA-256) and at a few thousand random
// offsets and sizes, many across segment boundaries.
func TestReadLargeImages(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	const segSize = 100_000_000
	plain := labtest.Pattern{Seed: 41, Size: 1 << 30}
	slo := labtest.Pattern{Seed: 42, Size: 3 << 30}
	sums := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, p := range map[string]labtest.Pattern{"plain.raw": plain, "slo.raw": slo} {
		wg.Go(func() { s := p.SHA256(); mu.Lock(); sums[name] = s; mu.Unlock() })
	}
	t0 := time.Now()
	labtest.PutPlain(t, c, "plain.raw", plain, plain.Size)
	labtest.PutSLO(t, c, "slo.raw", slo, slo.Size, segSize)
	wg.Wait()
	t.Logf("uploaded in %v", time.Since(t0))
	t0 = time.Now()

	d := labtest.Mount(t, c, labtest.MountOpts{})
	for _, name := range []string{"plain.raw", "slo.raw"} {
		if got := labtest.SHA256File(t, d.Path(name)); got != sums[name] {
			t.Errorf("sha256 of %s through the mount %s, want %s", name, got, sums[name])
		}
	}
	d.Stop()
	t.Logf("read in %v", time.Since(t0))
	t0 = time.Now()

	// Random reads on a fresh mount with a small memory budget, through
	// O_DIRECT (as qemu cache=none reads) so that the kernel's page cache
	// serves nothing: every read reaches the daemon.
	d = labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--read-memory", "64MiB", "--read-ahead", "16MiB"}})
	f := labtest.OpenDirect(t, d.Path("slo.raw"))
	type rd struct{ off, n int64 }
	r := rand.New(rand.NewPCG(7, 7))
	var reads []rd
	size := func() int64 { return 1 + r.Int64N(1<<r.IntN(21)) } // 1 byte to 1 MiB, mostly small
	for range 2000 {
		reads = append(reads, rd{r.Int64N(slo.Size), size()})
	}
	for k := int64(1); k*segSize < slo.Size; k++ { // across every segment boundary
		n := size()
		reads = append(reads, rd{max(0, k*segSize-r.Int64N(n+1)), n})
	}
	reads = append(reads, rd{slo.Size - 10, 100}, rd{slo.Size - 1<<20, 1 << 20}) // the end
	var failed sync.Once
	var next sync.Mutex
	i := 0
	var workers sync.WaitGroup
	for range 8 {
		workers.Go(func() {
			for {
				next.Lock()
				if i == len(reads) {
					next.Unlock()
					return
				}
				q := reads[i]
				i++
				next.Unlock()
				buf := make([]byte, q.n)
				n, err := f.ReadAt(buf, q.off)
				want := slo.Bytes(q.off, q.n)
				if (err != nil && err != io.EOF) || n != len(want) || !bytes.Equal(buf[:n], want) {
					failed.Do(func() {
						t.Errorf("read of %d bytes at %d: %d, %v; bytes equal: %v", q.n, q.off, n, err, bytes.Equal(buf[:n], want))
					})
				}
			}
		})
	}
	workers.Wait()
	t.Logf("%d random reads compared in %v", len(reads), time.Since(t0))
}

// TestReadManyReaders: 8 readers of one image and 8 readers of 8 images
// at once, with O_DIRECT so that only the daemon's cache can share
// anything: the data is right, and the shared image is fetched from
// Swift about once.
func TestReadManyReaders(t *testing.T) {
	c := labtest.NewContainer(t)
	shared := labtest.Pattern{Seed: 50, Size: 128 << 20}
	labtest.PutSLO(t, c, "shared.img", shared, shared.Size, 32<<20)
	var own []labtest.Pattern
	for i := range 8 {
		p := labtest.Pattern{Seed: uint64(60 + i), Size: 24<<20 + int64(i)*4099}
		labtest.PutPlain(t, c, fmt.Sprintf("vm%d.img", i), p, p.Size)
		own = append(own, p)
	}
	fp := labtest.NewFaultProxy(t) // counts the GETs
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL, "--read-memory", "512MiB"}})

	readAll := func(name string, p labtest.Pattern) error {
		f, err := os.OpenFile(d.Path(name), os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for off := int64(0); off < p.Size; off += int64(len(buf)) {
			n, err := f.ReadAt(buf, off)
			if err != nil && err != io.EOF {
				return err
			}
			if !bytes.Equal(buf[:n], p.Bytes(off, int64(len(buf)))) {
				return fmt.Errorf("%s: wrong bytes at %d", name, off)
			}
		}
		return nil
	}
	run := func(what string, job func(i int) error) {
		errs := make([]error, 8)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() { errs[i] = job(i) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		}
	}
	run("8 readers of one image", func(int) error { return readAll("shared.img", shared) })
	_, got := fp.DataGETs()
	if got < shared.Size || got > shared.Size*5/4 {
		t.Errorf("8 readers of a %d byte image fetched %d bytes from Swift: the cache did not share", shared.Size, got)
	}
	t.Logf("8 readers of a %d byte image: %d bytes fetched", shared.Size, got)
	run("8 readers of 8 images", func(i int) error { return readAll(fmt.Sprintf("vm%d.img", i), own[i]) })
}

//go:build integration

package bench

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ncw/swift/v2"
	"golang.org/x/sync/errgroup"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// BenchmarkWrite measures the write path against the raw Swift client in
// the same run, for BENCH_ROUNDS rounds (default 3), alternating the two
// so that both see the same load:
//
//   - imagefs: `cp` of a random image (BENCH_WRITE_GIB GiB, default 4) into
//     a fresh mount with the default settings (32 MiB segments, 4 upload
//     workers), until cp returns (the commit included); the daemon's CPU
//     time and peak RSS (VmHWM) during the copy;
//   - raw: the same file with ncw/swift as a client built for speed would
//     do it with the same segment size and parallelism: 4 goroutines each
//     read a 32 MiB segment, compute its MD5 and PUT it with that ETag and
//     its Content-Length, then the SLO manifest is PUT.
//
// BENCH_WRITE_FLAGS adds flags to the mount (e.g. --sha256=false).
//
// The ratio is imagefs/raw throughput (target ≥ 0.9); the memory budget
// is (workers+1) × segment size, and peak RSS should stay within it plus
// 64 MiB.
func BenchmarkWrite(b *testing.B) {
	rounds := benchInt("BENCH_ROUNDS", 3)
	size := int64(benchInt("BENCH_WRITE_GIB", 4)) << 30
	const segSize, workers = 32 << 20, 4
	budget := int64(workers+1) * segSize
	c := labtest.NewContainer(b)
	src, _ := labtest.RandomFile(b, size, 300)
	// Read it once so that both sides read it from the page cache.
	sf := must(os.Open(src))
	if _, err := io.Copy(io.Discard, sf); err != nil {
		b.Fatal(err)
	}
	sf.Close()
	raw := rawConn(b)
	flags := strings.Fields(os.Getenv("BENCH_WRITE_FLAGS"))
	sha := !slices.Contains(flags, "--sha256=false")
	fl := measureFloor(b, 2)

	type wround struct {
		raw, mnt float64 // MB/s
		cpu      float64 // daemon CPU seconds per GiB
		hwm      int64
	}
	var res []wround
	for b.Loop() {
		for r := range rounds {
			var x wround
			x.raw = rawUpload(b, raw, c, fmt.Sprintf("raw-%d.img", r), src, size, segSize, workers)
			d := labtest.Mount(b, c, labtest.MountOpts{Args: flags, Env: profileEnv(fmt.Sprintf("write-%d", r+1))})
			cpu0 := d.CPUSeconds()
			start := time.Now()
			labtest.RunCmd(b, "cp", src, d.Path(fmt.Sprintf("cp-%d.img", r)))
			el := time.Since(start)
			x.mnt = float64(size) / el.Seconds() / 1e6
			x.cpu = (d.CPUSeconds() - cpu0) / float64(size>>30)
			x.hwm = d.PeakRSS()
			d.Stop()
			res = append(res, x)
			// Keep the lab's disk small: the next round writes new names.
			for _, n := range []string{fmt.Sprintf("raw-%d.img", r), fmt.Sprintf("cp-%d.img", r)} {
				if err := segments.Purge(context.Background(), labtest.Swift, c, n); err != nil {
					b.Logf("remove %s: %v", n, err)
				}
			}
		}
	}
	wf := fl.writeFloor(sha)
	parts := "MD5 + FUSE write"
	if sha {
		parts += " + SHA-256"
	}
	fmt.Printf("\n%s; write floor %.2f (%s)\n", fl, wf, parts)
	fmt.Printf("\n| round | raw ncw/swift MB/s | imagefs cp MB/s | ratio | daemon CPU s/GiB | CPU / floor | VmHWM MiB |\n|---|---|---|---|---|---|---|\n")
	var ratios, raws, mnts, cpus []float64
	var hwm int64
	for i, x := range res {
		fmt.Printf("| %d | %.0f | %.0f | %.2f | %.2f | %.2f | %d |\n", i+1, x.raw, x.mnt, x.mnt/x.raw, x.cpu, x.cpu/wf, x.hwm>>20)
		cpus = append(cpus, x.cpu)
		ratios = append(ratios, x.mnt/x.raw)
		raws, mnts = append(raws, x.raw), append(mnts, x.mnt)
		hwm = max(hwm, x.hwm)
	}
	fmt.Printf("\nmedians: ratio %.2f [raw %s MB/s, imagefs %s MB/s]; daemon CPU %.2f s/GiB = %.2f × the floor %.2f (target ≤ 1.25); %d GiB copies; peak RSS %d MiB, budget (workers+1)×segment = %d MiB, + 64 MiB = %d MiB\n\n",
		mid(ratios), between(raws), between(mnts), mid(cpus), mid(cpus)/wf, wf, size>>30, hwm>>20, budget>>20, (budget+64<<20)>>20)
	b.ReportMetric(mid(ratios), "write-ratio")
	b.ReportMetric(mid(cpus)/wf, "cpu/floor")
	b.ReportMetric(float64(hwm>>20), "peak-RSS-MiB")
	if hwm > budget+64<<20 {
		b.Errorf("peak RSS %d MiB exceeds the write budget %d MiB + 64 MiB", hwm>>20, budget>>20)
	}
}

// rawUpload stores file as an SLO the way a fast client would, and
// returns its throughput in MB/s.
func rawUpload(b *testing.B, c *swift.Connection, cont, name, file string, size, segSize int64, workers int) float64 {
	f := must(os.Open(file))
	defer f.Close()
	ctx := context.Background()
	segCont := cont + "_segments"
	if err := c.ContainerCreate(ctx, segCont, nil); err != nil {
		b.Fatal(err)
	}
	n := int((size + segSize - 1) / segSize)
	etags := make([]string, n)
	prefix := name + "/" + strconv.FormatInt(time.Now().UnixNano(), 10) + "/"
	start := time.Now()
	var next sync.Mutex
	i := 0
	g := new(errgroup.Group)
	for range workers {
		g.Go(func() error {
			buf := make([]byte, segSize)
			for {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= n {
					return nil
				}
				off := int64(k) * segSize
				l := min(segSize, size-off)
				if _, err := f.ReadAt(buf[:l], off); err != nil && err != io.EOF {
					return err
				}
				sum := md5.Sum(buf[:l])
				etags[k] = hex.EncodeToString(sum[:])
				h := swift.Headers{"Content-Length": strconv.FormatInt(l, 10)}
				if _, err := c.ObjectPut(ctx, segCont, fmt.Sprintf("%s%08d", prefix, k), bytes.NewReader(buf[:l]), false, etags[k], "", h); err != nil {
					return err
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	entries := make([]segments.ManifestEntry, n)
	for k := range n {
		entries[k] = segments.ManifestEntry{Container: segCont, Object: fmt.Sprintf("%s%08d", prefix, k), ETag: etags[k],
			Size: min(segSize, size-int64(k)*segSize)}
	}
	if _, err := labtest.Swift.PutManifest(ctx, cont, name, entries, segments.PutOptions{}); err != nil {
		b.Fatal(err)
	}
	return float64(size) / time.Since(start).Seconds() / 1e6
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func benchInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func mid(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func between(v []float64) string { return fmt.Sprintf("%.0f–%.0f", slices.Min(v), slices.Max(v)) }

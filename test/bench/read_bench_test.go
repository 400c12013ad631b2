//go:build integration

package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// BenchmarkRead measures the read path against the raw Swift client in the
// same run, for BENCH_ROUNDS rounds (default 3), each on fresh mounts:
//
//   - sequential: a 1 GiB image (an SLO of 32 MiB segments, as imagefs
//     writes them) read with dd bs=1M (buffered, like cp) and with dd
//     bs=4M iflag=direct (like qemu cache=none), against 8 parallel 8 MiB
//     ranged GETs of the same object with ncw/swift (through Swift's SLO
//     middleware), and of its segments (as imagefs reads);
//   - random: 64 KiB O_DIRECT preads at fresh random offsets, against one
//     ranged GET of 64 KiB of the object (through Swift's SLO middleware)
//     and of its segment (directly), interleaved so both see the same load;
//   - cached: the same preads again, from memory, and from the disk cache
//     (filled by a pass on another mount, read after a remount);
//   - memory: the daemon's peak RSS (VmHWM) against --read-memory.
func BenchmarkRead(b *testing.B) {
	rounds := benchInt("BENCH_ROUNDS", 3)
	randomReads := benchInt("BENCH_RANDOM_READS", 300)
	const readMemory = 256 << 20
	c := labtest.NewContainer(b)
	img := labtest.Pattern{Seed: 200, Size: 1 << 30}
	const segSize = 32 << 20
	labtest.PutSLO(b, c, "img.raw", img, img.Size, segSize)
	raw := rawConn(b)
	args := []string{"--read-memory", "256MiB"}
	fl := measureFloor(b, 2)

	var res []round
	for b.Loop() {
		for r := range rounds {
			var x round
			x.rawSeq = rawParallel(b, raw, img.Size, 8, 8<<20, func(off int64) (string, string, int64) { return c, "img.raw", off })
			x.rawSegSeq = rawParallel(b, raw, img.Size, 8, 8<<20, func(off int64) (string, string, int64) {
				return c + "_segments", fmt.Sprintf("img.raw/seg/%08d", off/segSize), off % segSize
			})
			d := labtest.Mount(b, c, labtest.MountOpts{Args: args, Env: profileEnv(fmt.Sprintf("read-dd1M-%d", r+1))})
			x.seqBuf, x.cpuBuf = ddRead(b, d, "img.raw", img.Size, "bs=1M")
			x.hwm = d.PeakRSS()
			d.Stop()
			d = labtest.Mount(b, c, labtest.MountOpts{Args: args, Env: profileEnv(fmt.Sprintf("read-dd4Mdirect-%d", r+1))})
			x.seqDirect, x.cpuDirect = ddRead(b, d, "img.raw", img.Size, "bs=4M", "iflag=direct")
			x.hwm = max(x.hwm, d.PeakRSS())
			d.Stop()

			rng := rand.New(rand.NewPCG(uint64(r), 99))
			offs := make([]int64, randomReads)
			for i := range offs {
				offs[i] = rng.Int64N(img.Size-64<<10) &^ 4095
			}
			d = labtest.Mount(b, c, labtest.MountOpts{Args: args})
			x.rand, x.rawObj, x.rawSeg = randomVsRaw(b, raw, c, d, offs, rng)
			x.mem = preads(b, d, offs)
			d.Stop()
			// The disk cache: filled by one pass, read after a remount.
			cacheDir := b.TempDir()
			cargs := append(slices.Clone(args), "--cache-dir", cacheDir, "--cache-size", "2GiB")
			d = labtest.Mount(b, c, labtest.MountOpts{Args: cargs})
			preads(b, d, offs)
			d.Stop()
			d = labtest.Mount(b, c, labtest.MountOpts{Args: cargs})
			x.disk = preads(b, d, offs)
			x.hwm = max(x.hwm, d.PeakRSS())
			d.Stop()
			res = append(res, x)
			b.Logf("round %d: %s", r+1, x)
		}
	}
	report(b, res, readMemory, fl)
}

type round struct {
	rawSeq, rawSegSeq    float64 // MB/s: ranges of the object, of its segments
	seqBuf, seqDirect    float64 // MB/s
	cpuBuf, cpuDirect    float64 // daemon CPU seconds per GiB
	rand, rawObj, rawSeg []time.Duration
	mem, disk            []time.Duration
	hwm                  int64 // bytes
}

func (x round) String() string {
	return fmt.Sprintf("raw %.0f MB/s (segments %.0f), dd bs=1M %.0f MB/s (%.2f), dd bs=4M direct %.0f MB/s (%.2f); "+
		"random p50 %v vs raw %v (object) %v (segment); memory hit p50 %v, disk hit p50 %v; VmHWM %d MiB",
		x.rawSeq, x.rawSegSeq, x.seqBuf, x.seqBuf/x.rawSeq, x.seqDirect, x.seqDirect/x.rawSeq,
		pct(x.rand, 50), pct(x.rawObj, 50), pct(x.rawSeg, 50), pct(x.mem, 50), pct(x.disk, 50), x.hwm>>20)
}

// rawConn is the reference client: ncw/swift with the lab user's token.
// It is authenticated before use: ncw/swift calls made in parallel on a
// fresh connection may go out with an empty storage URL.
func rawConn(b *testing.B) *swift.Connection {
	c := &swift.Connection{Auth: labtest.Keeper.Authenticator(), Transport: labtest.Keeper.Transport(segments.DefaultTransport())}
	if err := c.Authenticate(context.Background()); err != nil {
		b.Fatalf("raw client: %v", err)
	}
	return c
}

var rawBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func rawGet(c *swift.Connection, cont, obj string, off, n int64) error {
	f, _, err := c.ObjectOpen(context.Background(), cont, obj, false, swift.Headers{"Range": fmt.Sprintf("bytes=%d-%d", off, off+n-1)})
	if err != nil {
		return err
	}
	defer f.Close()
	// Large reads: io.Copy to io.Discard would read 8 KiB at a time, and
	// ncw/swift starts a goroutine for each read of a body.
	buf := rawBufs.Get().(*[]byte)
	defer rawBufs.Put(buf)
	var got int64
	for {
		m, rerr := f.Read(*buf)
		got += int64(m)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if err == nil && got != n {
		err = fmt.Errorf("%d bytes, want %d", got, n)
	}
	return err
}

// rawParallel reads size bytes with par parallel ranged GETs of chunk
// bytes and returns MB/s; where(off) names the object and offset that
// hold byte off (the object itself, or one of its segments).
func rawParallel(b *testing.B, c *swift.Connection, size int64, par int, chunk int64, where func(off int64) (cont, obj string, at int64)) float64 {
	var next int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, par)
	start := time.Now()
	for i := range par {
		wg.Go(func() {
			for {
				mu.Lock()
				off := next
				next += chunk
				mu.Unlock()
				if off >= size || errs[i] != nil {
					return
				}
				cont, obj, at := where(off)
				errs[i] = rawGet(c, cont, obj, at, min(chunk, size-off))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	for _, err := range errs {
		if err != nil {
			b.Fatalf("raw GET: %v", err)
		}
	}
	return float64(size) / el.Seconds() / 1e6
}

// ddRead reads a file of the mount with dd and returns MB/s and the
// daemon's CPU seconds per GiB read.
func ddRead(b *testing.B, d *labtest.Daemon, name string, size int64, args ...string) (float64, float64) {
	cpu0 := d.CPUSeconds()
	start := time.Now()
	out, err := exec.Command("dd", append([]string{"if=" + d.Path(name), "of=/dev/null", "status=none"}, args...)...).CombinedOutput()
	el := time.Since(start)
	if err != nil {
		b.Fatalf("dd: %v: %s", err, out)
	}
	return float64(size) / el.Seconds() / 1e6, (d.CPUSeconds() - cpu0) / (float64(size) / (1 << 30))
}

// randomVsRaw times 64 KiB O_DIRECT preads at offs through the mount,
// each followed by one raw ranged GET of 64 KiB at another random offset
// of the object, and one of the segment object straight.
func randomVsRaw(b *testing.B, c *swift.Connection, cont string, d *labtest.Daemon, offs []int64, rng *rand.Rand) (mnt, obj, seg []time.Duration) {
	f, err := os.OpenFile(d.Path("img.raw"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	const segSize = 32 << 20
	for _, off := range offs {
		t := time.Now()
		if _, err := f.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		mnt = append(mnt, time.Since(t))
		o := rng.Int64N(1<<30-64<<10) &^ 4095
		t = time.Now()
		if err := rawGet(c, cont, "img.raw", o, 64<<10); err != nil {
			b.Fatal(err)
		}
		obj = append(obj, time.Since(t))
		o = rng.Int64N(segSize - 64<<10)
		t = time.Now()
		if err := rawGet(c, cont+"_segments", fmt.Sprintf("img.raw/seg/%08d", rng.IntN(32)), o, 64<<10); err != nil {
			b.Fatal(err)
		}
		seg = append(seg, time.Since(t))
	}
	return mnt, obj, seg
}

// preads times 64 KiB O_DIRECT preads at offs.
func preads(b *testing.B, d *labtest.Daemon, offs []int64) []time.Duration {
	f, err := os.OpenFile(d.Path("img.raw"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var out []time.Duration
	for _, off := range offs {
		t := time.Now()
		if _, err := f.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		out = append(out, time.Since(t))
	}
	return out
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// report prints one table row per round and reports the medians.
func report(b *testing.B, res []round, readMemory int64, fl floor) {
	fmt.Printf("\n%s\n", fl)
	fmt.Printf("\n| round | raw MB/s (object, segments) | dd 1M MB/s | ratio | dd 4M direct MB/s | ratio | CPU s/GiB (1M, 4M direct) | random p50/p99 ms | raw object p50/p99 ms | raw segment p50/p99 ms | p50 ratio (object, segment) | memory hit p50/p99 µs | disk hit p50/p99 µs | VmHWM MiB |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var seqR, dirR, seqSegR, randR, randSegR, raws, bufs, dirs, cpuB, cpuD []float64
	var hwm int64
	for i, x := range res {
		us := func(d time.Duration) float64 { return float64(d) / 1e3 }
		fmt.Printf("| %d | %.0f, %.0f | %.0f | %.2f | %.0f | %.2f | %.2f, %.2f | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f | %.2f, %.2f | %.0f / %.0f | %.0f / %.0f | %d |\n",
			i+1, x.rawSeq, x.rawSegSeq, x.seqBuf, x.seqBuf/x.rawSeq, x.seqDirect, x.seqDirect/x.rawSeq, x.cpuBuf, x.cpuDirect,
			ms(pct(x.rand, 50)), ms(pct(x.rand, 99)), ms(pct(x.rawObj, 50)), ms(pct(x.rawObj, 99)),
			ms(pct(x.rawSeg, 50)), ms(pct(x.rawSeg, 99)),
			ms(pct(x.rand, 50))/ms(pct(x.rawObj, 50)), ms(pct(x.rand, 50))/ms(pct(x.rawSeg, 50)),
			us(pct(x.mem, 50)), us(pct(x.mem, 99)), us(pct(x.disk, 50)), us(pct(x.disk, 99)), x.hwm>>20)
		seqR = append(seqR, x.seqBuf/x.rawSeq)
		dirR = append(dirR, x.seqDirect/x.rawSeq)
		seqSegR = append(seqSegR, x.seqBuf/x.rawSegSeq)
		randR = append(randR, ms(pct(x.rand, 50))/ms(pct(x.rawObj, 50)))
		randSegR = append(randSegR, ms(pct(x.rand, 50))/ms(pct(x.rawSeg, 50)))
		raws, bufs, dirs = append(raws, x.rawSeq), append(bufs, x.seqBuf), append(dirs, x.seqDirect)
		cpuB, cpuD = append(cpuB, x.cpuBuf), append(cpuD, x.cpuDirect)
		hwm = max(hwm, x.hwm)
	}
	fmt.Printf("\nmedians: sequential ratio %.2f (dd 1M) %.2f (dd 4M direct), %.2f (dd 1M against raw GETs of the segments) [raw %s MB/s, dd 1M %s, dd 4M direct %s]; random p50 ratio %.2f (object) %.2f (segment); peak RSS %d MiB for --read-memory %d MiB\n\n",
		mid(seqR), mid(dirR), mid(seqSegR), between(raws), between(bufs), between(dirs), mid(randR), mid(randSegR), hwm>>20, readMemory>>20)
	fmt.Printf("daemon CPU from Swift: %.2f s/GiB (dd 1M), %.2f (dd 4M direct); target ≤ 0.6, FUSE's own %.2f\n\n", mid(cpuB), mid(cpuD), fl.fuseRead)
	b.ReportMetric(mid(seqR), "seq-ratio")
	b.ReportMetric(mid(cpuB), "cpu-s/GiB")
	b.ReportMetric(mid(dirR), "seq-direct-ratio")
	b.ReportMetric(mid(randR), "rand-p50-ratio")
	b.ReportMetric(float64(hwm>>20), "peak-RSS-MiB")
	// The blocks in memory, in flight and prefetched stay within
	// --read-memory by construction; the heap may run GOGC=20 % above its
	// live data, and the runtime, the binary and go-fuse's buffers take
	// some tens of MiB.
	if budget := readMemory*6/5 + 64<<20; hwm > budget {
		b.Errorf("peak RSS %d MiB exceeds --read-memory %d MiB + 20%% + 64 MiB = %d MiB", hwm>>20, readMemory>>20, budget>>20)
	}
}

//go:build integration

package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// BenchmarkWarm measures `imagefs warm` of a 1 GiB image (an SLO of 32 MiB
// segments) into a fresh cache directory, on a fresh mount, against the
// raw client (ncw/swift) downloading the same segments with the same
// parallelism (BENCH_WARM_PARALLEL, default 4, of 16 MiB ranged GETs), and
// with 8 × 8 MiB, in the same round, for BENCH_ROUNDS rounds.
func BenchmarkWarm(b *testing.B) {
	rounds := benchInt("BENCH_ROUNDS", 3)
	par := benchInt("BENCH_WARM_PARALLEL", 4)
	c := labtest.NewContainer(b)
	img := labtest.Pattern{Seed: 210, Size: 1 << 30}
	const segSize = 32 << 20
	labtest.PutSLO(b, c, "img.raw", img, img.Size, segSize)
	raw := rawConn(b)
	seg := func(off int64) (string, string, int64) {
		return c + "_segments", fmt.Sprintf("img.raw/seg/%08d", off/segSize), off % segSize
	}
	var ratios, ratios8, cpus []float64
	for b.Loop() {
		for r := range rounds {
			rawSame := rawParallel(b, raw, img.Size, par, 16<<20, seg)
			raw8 := rawParallel(b, raw, img.Size, 8, 8<<20, seg)
			d := labtest.Mount(b, c, labtest.MountOpts{Args: []string{"--cache-dir", b.TempDir(), "--cache-size", "2GiB", "--boot-traces=false"},
				Env: profileEnv(fmt.Sprintf("warm-%d", r+1))})
			cpu0 := d.CPUSeconds()
			start := time.Now()
			res := labtest.Exec(b, "warm", "--quiet", "--parallel", fmt.Sprint(par), d.Path("img.raw"))
			el := time.Since(start)
			if res.Code != 0 {
				b.Fatalf("warm: exit %d: %s", res.Code, res.Stderr)
			}
			cpu := (d.CPUSeconds() - cpu0) / (float64(img.Size) / (1 << 30))
			hwm := d.PeakRSS()
			st := labtest.Exec(b, "status", d.Dir)
			d.Stop()
			cpus = append(cpus, cpu)
			warm := float64(img.Size) / el.Seconds() / 1e6
			ratios, ratios8 = append(ratios, warm/rawSame), append(ratios8, warm/raw8)
			b.Logf("round %d: warm %.0f MB/s (%.1fs), raw %d×16MiB %.0f MB/s (ratio %.2f), raw 8×8MiB %.0f MB/s (ratio %.2f); daemon CPU %.2f s/GiB, VmHWM %d MiB; %s",
				r+1, warm, el.Seconds(), par, rawSame, warm/rawSame, raw8, warm/raw8, cpu, hwm>>20, cacheLine(st.Stdout))
		}
	}
	b.Logf("median warm/raw ratio: %.2f (same parallelism), %.2f (raw 8×8MiB); target ≥ 0.9; daemon CPU %.2f s/GiB", mid(ratios), mid(ratios8), mid(cpus))
	b.ReportMetric(mid(ratios), "warm-ratio")
	b.ReportMetric(mid(cpus), "cpu-s/GiB")
}

func cacheLine(status string) string {
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "read cache:") {
			return l
		}
	}
	return ""
}

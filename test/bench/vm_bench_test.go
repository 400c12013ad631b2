//go:build integration

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/imagefs/imagefs/test/labtest"
)

// BenchmarkHypervisor measures what a hypervisor sees, for BENCH_ROUNDS
// rounds (default 3), against references in the same run:
//
//   - warm: fio random reads (O_DIRECT, libaio; 64 KiB and 4 KiB, QD 1
//     and QD 16, BENCH_FIO_SECONDS each, default 5) of a 1 GiB image
//     (BENCH_VM_IMAGE_MIB) that was read whole once with --cache-dir (by
//     `imagefs warm` if the binary has it, else dd iflag=direct), on a
//     remount with that cache dir, against the same bytes in a local file
//     on the cache's disk; the two alternate, the order flips each round;
//   - cold: fio random 64 KiB reads at QD 1 and QD 16 on a fresh mount
//     without a disk cache, against as many ncw/swift ranged GETs of 64
//     KiB in flight (of the SLO object, and of its segments, which is what
//     imagefs fetches), for the same time; and dd bs=4M iflag=direct of
//     the whole image against 8 parallel 8 MiB ranged GETs;
//   - boot: the test guest (labtest.BuildGuest; it reads and checks all of
//     its 128 MiB disk) booted with qemu -accel tcg, cache=none, from a
//     cold image (fresh mount, fresh object), a warmed one (as above), a
//     trace-prefetched one (if the binary records boot traces: a fresh
//     mount after one boot of the same object) and a local copy.
func BenchmarkHypervisor(b *testing.B) {
	rounds := benchInt("BENCH_ROUNDS", 3)
	secs := benchInt("BENCH_FIO_SECONDS", 5)
	size := int64(benchInt("BENCH_VM_IMAGE_MIB", 1024)) << 20
	labtest.InstallLibvirt(b) // qemu
	installFio(b)
	g := labtest.BuildGuest(b)
	c := labtest.NewContainer(b)
	const segSize = 32 << 20
	img := labtest.Pattern{Seed: 300, Size: size}
	labtest.PutSLO(b, c, "img.raw", img, size, segSize)
	guestLocal, _ := labtest.GuestDisk(b, 128<<20, 301)
	raw := rawConn(b)
	warm, traces := binaryHas()
	b.Logf("imagefs warm: %v; boot traces: %v", warm, traces)

	// The warm image and its local twin, on the same disk.
	cacheDir := b.TempDir()
	cargs := []string{"--cache-dir", cacheDir, "--cache-size", fmt.Sprintf("%dMiB", 2*size>>20+512)}
	// The warm image is read through FUSE passthrough (the kernel reads the
	// cache's whole file) unless BENCH_PASSTHROUGH=0: then through the daemon.
	passthrough := os.Getenv("BENCH_PASSTHROUGH") != "0"
	cargs = append(cargs, fmt.Sprintf("--passthrough=%v", passthrough)) // on by default with --cache-dir
	b.Logf("warm reads with --passthrough: %v", passthrough)
	d := labtest.Mount(b, c, labtest.MountOpts{Args: cargs})
	how := fill(b, d, "img.raw", warm)
	if passthrough {
		waitWhole(b, cacheDir)
	}
	d.Stop()
	local := filepath.Join(b.TempDir(), "local.raw")
	writeLocal(b, local, img)
	wd := labtest.Mount(b, c, labtest.MountOpts{Args: cargs})

	type fioCase struct {
		bs string
		qd int
	}
	cases := []fioCase{{"64k", 1}, {"64k", 16}, {"4k", 1}, {"4k", 16}}
	var res []vmRound
	for b.Loop() {
		for r := range rounds {
			x := vmRound{warm: map[string][2]float64{}}
			for _, fc := range cases {
				k := fmt.Sprintf("%s QD%d", fc.bs, fc.qd)
				var m, l float64
				if r%2 == 0 {
					m, l = fioIOPS(b, wd.Path("img.raw"), fc.bs, fc.qd, secs), fioIOPS(b, local, fc.bs, fc.qd, secs)
				} else {
					l, m = fioIOPS(b, local, fc.bs, fc.qd, secs), fioIOPS(b, wd.Path("img.raw"), fc.bs, fc.qd, secs)
				}
				x.warm[k] = [2]float64{m, l}
			}
			for i, qd := range []int{1, 16} {
				cd := labtest.Mount(b, c, labtest.MountOpts{})
				x.cold[i] = fioIOPS(b, cd.Path("img.raw"), "64k", qd, secs)
				cd.Stop()
				x.rawObj[i] = rawRandomIOPS(b, raw, qd, secs, func(rng *rand.Rand) (string, string, int64) {
					return c, "img.raw", rng.Int64N(size-64<<10) &^ 4095
				})
				x.rawSeg[i] = rawRandomIOPS(b, raw, qd, secs, func(rng *rand.Rand) (string, string, int64) {
					off := rng.Int64N(size-64<<10) &^ 4095
					return c + "_segments", fmt.Sprintf("img.raw/seg/%08d", off/segSize), min(off%segSize, segSize-64<<10)
				})
			}
			x.rawSeq = rawParallel(b, raw, size, 8, 8<<20, func(off int64) (string, string, int64) {
				return c + "_segments", fmt.Sprintf("img.raw/seg/%08d", off/segSize), off % segSize
			})
			cd := labtest.Mount(b, c, labtest.MountOpts{})
			x.seq, _ = ddRead(b, cd, "img.raw", size, "bs=4M", "iflag=direct")
			cd.Stop()

			// Boots: a fresh object for the cold boot (no trace of it yet).
			name := fmt.Sprintf("guest-%d.raw", r)
			f, err := os.Open(guestLocal)
			if err != nil {
				b.Fatal(err)
			}
			labtest.PutSLO(b, c, name, f, 128<<20, segSize)
			f.Close()
			x.boot[0] = bootOn(b, g, c, name, nil, false)
			if traces {
				time.Sleep(2 * time.Second) // the trace is stored when the first open ends
				x.boot[2] = bootOn(b, g, c, name, nil, false)
			}
			gc := []string{"--cache-dir", b.TempDir(), "--cache-size", "1GiB"}
			x.boot[1] = bootOn(b, g, c, name, gc, warm)
			x.boot[3] = bootLocal(b, g, guestLocal)
			res = append(res, x)
			b.Logf("round %d: %s", r+1, x)
		}
	}
	wd.Stop()
	reportVM(b, res, how, traces)
}

type vmRound struct {
	warm           map[string][2]float64 // "64k QD1" -> IOPS on the mount, of the local file
	cold           [2]float64            // IOPS, QD 1 and 16
	rawObj, rawSeg [2]float64
	seq, rawSeq    float64          // MB/s
	boot           [4]time.Duration // cold, warmed, trace-prefetched, local
}

func (x vmRound) String() string {
	var w []string
	for _, k := range []string{"64k QD1", "64k QD16", "4k QD1", "4k QD16"} {
		v := x.warm[k]
		w = append(w, fmt.Sprintf("%s %.0f/%.0f IOPS (%.2f)", k, v[0], v[1], v[0]/v[1]))
	}
	return fmt.Sprintf("warm %s; cold 64k QD1 %.0f IOPS vs raw %.0f (object) %.0f (segment), QD16 %.0f vs %.0f, %.0f; "+
		"cold seq %.0f MB/s vs raw %.0f; boot cold %v warmed %v trace %v local %v",
		strings.Join(w, ", "), x.cold[0], x.rawObj[0], x.rawSeg[0], x.cold[1], x.rawObj[1], x.rawSeg[1], x.seq, x.rawSeq,
		x.boot[0].Round(10*time.Millisecond), x.boot[1].Round(10*time.Millisecond), x.boot[2].Round(10*time.Millisecond), x.boot[3].Round(10*time.Millisecond))
}

// binaryHas says whether the binary under test has the warm command and
// boot traces (branches that may not be merged yet).
func binaryHas() (warm, traces bool) {
	top, _ := exec.Command(labtest.Binary, "--help").CombinedOutput()
	mount, _ := exec.Command(labtest.Binary, "mount", "--help").CombinedOutput()
	return regexp.MustCompile(`(?m)^\s+warm\s`).Match(top), strings.Contains(strings.ToLower(string(mount)), "trace")
}

// fill reads the whole of name into the mount's disk cache: with `imagefs
// warm` when the binary has it, else with dd iflag=direct (every byte
// through the daemon). It returns how.
func fill(b *testing.B, d *labtest.Daemon, name string, warm bool) string {
	start := time.Now()
	how := "dd bs=4M iflag=direct"
	var cmd *exec.Cmd
	if warm {
		how = "imagefs warm"
		cmd = exec.Command(labtest.Binary, "warm", d.Path(name))
	} else {
		cmd = exec.Command("dd", "if="+d.Path(name), "of=/dev/null", "bs=4M", "iflag=direct", "status=none")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s of %s: %v\n%s", how, name, err, out)
	}
	b.Logf("%s of %s: %v", how, name, time.Since(start).Round(10*time.Millisecond))
	return how
}

func writeLocal(b *testing.B, p string, img labtest.Pattern) {
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, io.NewSectionReader(img, 0, img.Size)); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

func installFio(b *testing.B) {
	if _, err := exec.LookPath("fio"); err == nil {
		return
	}
	cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", "fio")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("apt-get install fio: %v\n%s", err, out)
	}
}

// fioIOPS runs fio random reads of file (O_DIRECT, libaio) for secs
// seconds and returns the IOPS.
func fioIOPS(b *testing.B, file, bs string, qd, secs int) float64 {
	out, err := exec.Command("fio", "--name=bench", "--filename="+file, "--readonly", "--rw=randread", "--bs="+bs,
		"--direct=1", "--ioengine=libaio", fmt.Sprintf("--iodepth=%d", qd), "--time_based", fmt.Sprintf("--runtime=%d", secs),
		"--randrepeat=0", "--norandommap", "--output-format=json").Output()
	if err != nil {
		b.Fatalf("fio %s: %v\n%s", file, err, out)
	}
	var r struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	s := string(out)
	if i := strings.IndexByte(s, '{'); i > 0 {
		s = s[i:] // fio's notes before the JSON
	}
	if err := json.Unmarshal([]byte(s), &r); err != nil || len(r.Jobs) != 1 || r.Jobs[0].Error != 0 {
		b.Fatalf("fio %s: %v\n%s", file, err, out)
	}
	return r.Jobs[0].Read.IOPS
}

// rawRandomIOPS keeps qd ranged GETs of 64 KiB in flight for secs seconds
// at the places where(rng) names, and returns the GETs per second.
func rawRandomIOPS(b *testing.B, c *swift.Connection, qd, secs int, where func(*rand.Rand) (string, string, int64)) float64 {
	var n int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, qd)
	end := time.Now().Add(time.Duration(secs) * time.Second)
	start := time.Now()
	for i := range qd {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for time.Now().Before(end) && errs[i] == nil {
				cont, obj, off := where(rng)
				errs[i] = rawGet(c, cont, obj, off, 64<<10)
				mu.Lock()
				n++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatalf("raw GET: %v", err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// bootOn boots the guest from object name on a fresh mount with args; if
// args has a cache dir, the image is read whole into it first (fill) and
// the boot runs on a remount.
func bootOn(b *testing.B, g *labtest.Guest, c, name string, args []string, warm bool) time.Duration {
	if len(args) > 0 {
		d := labtest.Mount(b, c, labtest.MountOpts{Args: args})
		fill(b, d, name, warm)
		d.Stop()
	}
	d := labtest.Mount(b, c, labtest.MountOpts{Args: args})
	defer d.Stop()
	return boot(b, g, d.Path(name))
}

// bootLocal boots from a local file; cache=none (O_DIRECT) keeps the page
// cache out of it.
func bootLocal(b *testing.B, g *labtest.Guest, p string) time.Duration { return boot(b, g, p) }

func boot(b *testing.B, g *labtest.Guest, p string) time.Duration {
	res := g.Boot(b, labtest.BootOpts{Disk: p, Cache: "none", Timeout: 180 * time.Second})
	if !res.OK {
		b.Fatalf("the guest did not boot from %s and find its disk intact (%v):\n%s", p, res.Err, res.Console)
	}
	return res.Took
}

func reportVM(b *testing.B, res []vmRound, how string, traces bool) {
	fmt.Printf("\nwarm image filled by: %s; boot traces: %v\n\n", how, traces)
	fmt.Printf("| round | warm 64k QD1 IOPS (mount/local, ratio) | 64k QD16 | 4k QD1 | 4k QD16 | cold 64k QD1 IOPS (raw object, segment) | cold 64k QD16 | cold seq MB/s (raw) | boot s: cold, warmed, trace, local | warmed/local | trace/local |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|\n")
	ratios := map[string][]float64{}
	add := func(k string, v float64) { ratios[k] = append(ratios[k], v) }
	for i, x := range res {
		var cells []string
		for _, k := range []string{"64k QD1", "64k QD16", "4k QD1", "4k QD16"} {
			v := x.warm[k]
			cells = append(cells, fmt.Sprintf("%.0f / %.0f, %.2f", v[0], v[1], v[0]/v[1]))
			add(k, v[0]/v[1])
		}
		for j := range 2 {
			cells = append(cells, fmt.Sprintf("%.0f (%.0f, %.0f)", x.cold[j], x.rawObj[j], x.rawSeg[j]))
			add(fmt.Sprintf("cold%d/obj", j), x.cold[j]/x.rawObj[j])
			add(fmt.Sprintf("cold%d/seg", j), x.cold[j]/x.rawSeg[j])
		}
		cells = append(cells, fmt.Sprintf("%.0f (%.0f)", x.seq, x.rawSeq))
		add("seq", x.seq/x.rawSeq)
		s := func(d time.Duration) string {
			if d == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", d.Seconds())
		}
		cells = append(cells, fmt.Sprintf("%s, %s, %s, %s", s(x.boot[0]), s(x.boot[1]), s(x.boot[2]), s(x.boot[3])))
		cells = append(cells, fmt.Sprintf("%.2f", x.boot[1].Seconds()/x.boot[3].Seconds()))
		add("warmboot", x.boot[1].Seconds()/x.boot[3].Seconds())
		add("coldboot", x.boot[0].Seconds()/x.boot[3].Seconds())
		if x.boot[2] > 0 {
			cells = append(cells, fmt.Sprintf("%.2f", x.boot[2].Seconds()/x.boot[3].Seconds()))
			add("traceboot", x.boot[2].Seconds()/x.boot[3].Seconds())
		} else {
			cells = append(cells, "-")
		}
		fmt.Printf("| %d | %s |\n", i+1, strings.Join(cells, " | "))
	}
	m := func(k string) float64 {
		if len(ratios[k]) == 0 {
			return 0
		}
		return mid(ratios[k])
	}
	fmt.Printf("\nmedians: warm/local IOPS 64k QD1 %.2f, 64k QD16 %.2f, 4k QD1 %.2f, 4k QD16 %.2f (target >= 0.9); "+
		"cold 64k IOPS against raw object/segment GETs: QD1 %.2f/%.2f, QD16 %.2f/%.2f; cold seq %.2f against raw segment GETs; "+
		"boot against local: cold %.2f, warmed %.2f, trace-prefetched %.2f (0: not measured) (target <= 1.2)\n\n",
		m("64k QD1"), m("64k QD16"), m("4k QD1"), m("4k QD16"), m("cold0/obj"), m("cold0/seg"), m("cold1/obj"), m("cold1/seg"),
		m("seq"), m("coldboot"), m("warmboot"), m("traceboot"))
	b.ReportMetric(m("64k QD16"), "warm-64k-qd16-ratio")
	b.ReportMetric(m("4k QD16"), "warm-4k-qd16-ratio")
	b.ReportMetric(m("warmboot"), "warm-boot-ratio")
}

// waitWhole waits until the cache in dir has assembled a whole image (its
// seal file is written last), so that the next mount passes it through.
func waitWhole(b *testing.B, dir string) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		found := false
		_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".seal") {
				found = true
			}
			return nil
		})
		if found {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("no whole image in %s 2 minutes after the warm", dir)
}

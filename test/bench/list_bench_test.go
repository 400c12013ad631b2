//go:build integration

package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/imagefs/imagefs/test/labtest"
)

// BenchmarkList measures `ls -l` of directories of 5,000 and of 100,000
// objects (BENCH_LIST_SIZES, made with Swift's bulk extract-archive):
// for BENCH_ROUNDS rounds (default 3; 1 for 100,000), on a fresh imagefs
// mount, cold (the first ls -l) and warm (the second, within --list-ttl),
// with the Swift requests of each kind the mount sent (its --metrics-addr),
// next to the raw listing (the same pages, 10,000 names each, fetched by
// ncw/swift) and to rclone mount (Debian's rclone) in the same round.
func BenchmarkList(b *testing.B) {
	if _, err := exec.LookPath("rclone"); err != nil {
		b.Fatal("rclone is needed (apt-get install rclone; test/bench/run.sh installs it)")
	}
	sizes := []int{5000, 100000}
	if v := os.Getenv("BENCH_LIST_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("BENCH_LIST_SIZES %q: a comma-separated list of counts", v)
			}
			sizes = append(sizes, n)
		}
	}
	raw := rawConn(b)
	for b.Loop() {
		for _, n := range sizes {
			c := labtest.NewContainer(b)
			files := make([]labtest.TarFile, n)
			for i := range files {
				files[i] = labtest.TarFile{Name: fmt.Sprintf("d/%06d.img", i), Size: 1 + i%100}
			}
			start := time.Now()
			labtest.ExtractArchive(b, c, files)
			b.Logf("%d objects created with extract-archive in %v", n, time.Since(start).Round(time.Millisecond))
			rounds := benchInt("BENCH_ROUNDS", 3)
			if n > 20000 {
				rounds = benchInt("BENCH_ROUNDS_LARGE", 1)
			}
			var res []listRound
			for r := range rounds {
				x := listRound{n: n}
				x.raw = rawList(b, raw, c, n)
				x.cold, x.warm, x.coldReq, x.warmReq = imagefsLs(b, c, n)
				x.rcloneCold, x.rcloneWarm = rcloneLs(b, c, n)
				res = append(res, x)
				b.Logf("%d entries, round %d: %s", n, r+1, x)
			}
			reportList(res)
		}
	}
}

type listRound struct {
	n                      int
	raw, cold, warm        time.Duration
	coldReq, warmReq       map[string]int
	rcloneCold, rcloneWarm time.Duration
}

func (x listRound) String() string {
	return fmt.Sprintf("raw listing %v; imagefs cold %v (%.2f×, %v) warm %v (%.3f×, %v); rclone cold %v warm %v",
		x.raw.Round(time.Millisecond), x.cold.Round(time.Millisecond), ratio(x.cold, x.raw), x.coldReq,
		x.warm.Round(time.Millisecond), ratio(x.warm, x.raw), x.warmReq,
		x.rcloneCold.Round(time.Millisecond), x.rcloneWarm.Round(time.Millisecond))
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// rawList fetches the listing of c's directory d/ as imagefs does: pages
// of 10,000 names with the delimiter.
func rawList(b *testing.B, conn *swift.Connection, c string, n int) time.Duration {
	start := time.Now()
	objs, err := conn.ObjectsAll(context.Background(), c, &swift.ObjectsOpts{Prefix: "d/", Delimiter: '/', Limit: 10000})
	dt := time.Since(start)
	if err != nil || len(objs) != n {
		b.Fatalf("raw listing: %d names, %v; want %d", len(objs), err, n)
	}
	return dt
}

// lsl runs ls -l on dir, checks that it shows n entries, and returns how
// long it took.
func lsl(b *testing.B, dir string, n int) time.Duration {
	start := time.Now()
	out, err := exec.Command("ls", "-l", dir).Output()
	dt := time.Since(start)
	if err != nil {
		b.Fatalf("ls -l %s: %v", dir, err)
	}
	if got := strings.Count(string(out), "\n") - 1; got != n { // "total" first
		b.Fatalf("ls -l %s: %d entries, want %d", dir, got, n)
	}
	return dt
}

// imagefsLs mounts c afresh and times ls -l of d/ twice, with the Swift
// requests each sent.
func imagefsLs(b *testing.B, c string, n int) (cold, warm time.Duration, coldReq, warmReq map[string]int) {
	addr := freeAddr(b)
	d := labtest.Mount(b, c, labtest.MountOpts{Args: []string{"--metrics-addr", addr, "--list-ttl", "5m",
		"--reap-interval", "1h", "--log-level", "info"}})
	defer d.Stop()
	if _, err := os.Stat(d.Path("d")); err != nil {
		b.Fatal(err)
	}
	before := labtest.SwiftRequests(b, addr)
	cold = lsl(b, d.Path("d"), n)
	mid := labtest.SwiftRequests(b, addr)
	warm = lsl(b, d.Path("d"), n)
	after := labtest.SwiftRequests(b, addr)
	return cold, warm, labtest.Delta(before, mid), labtest.Delta(mid, after)
}

// rcloneLs mounts c with rclone mount (its defaults, read-only) and times
// ls -l of d/ twice.
func rcloneLs(b *testing.B, c string, n int) (cold, warm time.Duration) {
	dir := b.TempDir()
	cmd := exec.Command("rclone", "mount", "--read-only", "lab:"+c, dir)
	cmd.Env = append(os.Environ(), "RCLONE_CONFIG_LAB_TYPE=swift", "RCLONE_CONFIG_LAB_ENV_AUTH=true")
	logf, err := os.Create(filepath.Join(b.TempDir(), "rclone.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = exec.Command("fusermount3", "-u", dir).Run()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !labtest.Mounted(dir) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			b.Fatalf("rclone did not mount within 30 s:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return lsl(b, filepath.Join(dir, "d"), n), lsl(b, filepath.Join(dir, "d"), n)
}

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func reportList(res []listRound) {
	fmt.Printf("\n| entries | round | raw listing | imagefs cold | ratio | requests (cold) | imagefs warm | ratio | requests (warm) | rclone cold | rclone warm |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, x := range res {
		fmt.Printf("| %d | %d | %.3f s | %.3f s | %.2f | %s | %.3f s | %.3f | %s | %.3f s | %.3f s |\n",
			x.n, i+1, x.raw.Seconds(), x.cold.Seconds(), ratio(x.cold, x.raw), reqs(x.coldReq),
			x.warm.Seconds(), ratio(x.warm, x.raw), reqs(x.warmReq), x.rcloneCold.Seconds(), x.rcloneWarm.Seconds())
	}
}

func reqs(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range []string{"GET", "HEAD", "PUT", "POST", "DELETE"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
		}
	}
	return strings.Join(parts, ", ")
}

//go:build integration

package bench

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// BenchmarkPeerStorm measures a cold boot storm: N hosts (BENCH_PEER_HOSTS,
// default 4: mounts of one container, each with its own process and
// cache directory, peers on 127.0.0.2...) read one image of
// BENCH_PEER_MIB MiB (default 256, written through imagefs, so that it has
// block digests) at once, with peer fill and without it, against one raw
// download of the image (ncw/swift, 4 × 16 MiB ranged GETs) in the same
// round. It prints, as ratios: storm time / raw download, Swift data bytes
// (counted by a proxy in front of Swift) / image size, and the daemons'
// CPU seconds.
func BenchmarkPeerStorm(b *testing.B) {
	rounds := benchInt("BENCH_ROUNDS", 3)
	hosts := benchInt("BENCH_PEER_HOSTS", 4)
	size := int64(benchInt("BENCH_PEER_MIB", 256)) << 20
	c := labtest.NewContainer(b)
	w := labtest.Mount(b, c, labtest.MountOpts{})
	src, sum := labtest.RandomFile(b, size, 220)
	labtest.RunCmd(b, "cp", src, w.Path("golden.img"))
	w.Stop()
	segs := labtest.SegmentNames(b, c)
	const segSize = 32 << 20 // imagefs' default --segment-size
	if int64(len(segs)) != (size+segSize-1)/segSize {
		b.Fatalf("%d segments for %d bytes: not 32 MiB segments", len(segs), size)
	}
	raw := rawConn(b)
	where := func(off int64) (string, string, int64) { return c + "_segments", segs[off/segSize], off % segSize }
	keyFile := filepath.Join(b.TempDir(), "peer.key")
	if err := os.WriteFile(keyFile, []byte("bench-fleet-key-0123456789\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	var peerT, plainT, peerB, plainB []float64
	for b.Loop() {
		for r := range rounds {
			rawMBs := rawParallel(b, raw, size, 4, 16<<20, where)
			rawS := float64(size) / 1e6 / rawMBs
			pt, pb, pcpu := storm(b, c, sum, size, hosts, keyFile)
			nt, nb, ncpu := storm(b, c, sum, size, hosts, "")
			peerT, plainT = append(peerT, pt.Seconds()/rawS), append(plainT, nt.Seconds()/rawS)
			peerB, plainB = append(peerB, float64(pb)/float64(size)), append(plainB, float64(nb)/float64(size))
			b.Logf("round %d: raw download %.1fs (%.0f MB/s); storm of %d with peers %.1fs (%.2fx raw), Swift %.2fx the image, daemons' CPU %.1fs; without peers %.1fs (%.2fx raw), Swift %.2fx, CPU %.1fs",
				r+1, rawS, rawMBs, hosts, pt.Seconds(), peerT[r], peerB[r], pcpu, nt.Seconds(), plainT[r], plainB[r], ncpu)
		}
	}
	b.Logf("median: with peers storm %.2fx one raw download, Swift %.2fx the image (targets ≤ 1.5x, ≤ 1.1x); without peers %.2fx, %.2fx",
		mid(peerT), mid(peerB), mid(plainT), mid(plainB))
}

// storm starts hosts fresh mounts of c (peers when keyFile is set), reads
// the image on all at once, stops them and returns the storm's time, the
// Swift data bytes and the daemons' CPU seconds.
func storm(b *testing.B, c, sum string, size int64, hosts int, keyFile string) (time.Duration, int64, float64) {
	fp := labtest.NewFaultProxy(b)
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var addrs []string
	for i := range hosts {
		addrs = append(addrs, fmt.Sprintf("127.0.0.%d:%d", 2+i, port))
	}
	ds := make([]*labtest.Daemon, hosts)
	var wg sync.WaitGroup
	for i := range hosts {
		args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", b.TempDir(), "--cache-size", "2GiB", "--boot-traces=false"}
		if keyFile != "" {
			args = append(args, "--peers", strings.Join(addrs, ","), "--peer-listen", addrs[i], "--peer-key-file", keyFile)
		}
		wg.Go(func() { ds[i] = labtest.Mount(b, c, labtest.MountOpts{Args: args}) })
	}
	wg.Wait()
	var cpu0 float64
	for _, d := range ds {
		cpu0 += d.CPUSeconds()
	}
	_, b0 := fp.DataGETs()
	errs := make([]string, hosts)
	start := time.Now()
	for i, d := range ds {
		wg.Go(func() {
			if got := labtest.SHA256File(b, d.Path("golden.img")); got != sum {
				errs[i] = fmt.Sprintf("host %d read sha256 %s, want %s", i, got, sum)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	_, b1 := fp.DataGETs()
	var cpu float64
	for _, d := range ds {
		cpu += d.CPUSeconds()
		d.Stop()
	}
	for _, e := range errs {
		if e != "" {
			b.Fatal(e)
		}
	}
	return el, b1 - b0, cpu - cpu0
}

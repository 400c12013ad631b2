package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/segments"
)

// BenchmarkReadPath is the daemon's read path without FUSE and without the
// lab, for CPU profiles of its own code: segments.Reader over loopback HTTP
// (a test server answering ranged GETs of 32 MiB segments from memory)
// into the block cache (--read-memory 256MiB, GOGC=20 as the daemon runs),
// read sequentially in 1 MiB reads through a Stream as FUSE READs do. It
// reports the process's CPU seconds per GiB (the test server's included)
// and the block buffers reused. Not a lab benchmark: no build tag.
//
//	go test -run '^$' -bench BenchmarkReadPath -benchtime 4x -cpuprofile /tmp/read.pprof ./test/bench/
func BenchmarkReadPath(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	const segSize = 32 << 20
	seg := make([]byte, segSize)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lo, hi, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Range"), "bytes="), "-")
		l, _ := strconv.Atoi(lo)
		h, _ := strconv.Atoi(hi)
		w.Header().Set("Content-Length", strconv.Itoa(h-l+1))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(seg[l : h+1])
	}))
	defer srv.Close()
	st := segments.NewSwiftStore(segments.SwiftOptions{Auth: staticAuth(srv.URL + "/v1/AUTH_bench"), ConnectTimeout: 10 * time.Second, Timeout: 10 * time.Second})
	const size = 1 << 30
	var segs []segments.Segment
	for off := int64(0); off < size; off += segSize {
		segs = append(segs, segments.Segment{Container: "c_segments", Object: fmt.Sprintf("img/seg/%08d", off/segSize), ETag: "e", Length: segSize, Size: segSize})
	}
	blocks, err := cache.New(cache.Options{Memory: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer blocks.Close()
	buf := make([]byte, 1<<20)
	var cpu float64
	for i := 0; b.Loop(); i++ {
		m := segments.NewManifest(segs, fmt.Sprintf("v%d", i)) // a new version: nothing cached
		s := blocks.Open(m.Version, size, segments.NewReader(st, m, segments.ReaderOptions{})).NewStream(cache.StreamOptions{})
		c0 := processCPU()
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := s.ReadAt(context.Background(), buf, off); err != nil {
				b.Fatal(err)
			}
		}
		cpu += processCPU() - c0
		s.Close()
	}
	b.SetBytes(size)
	b.ReportMetric(cpu/float64(b.N), "cpu-s/GiB")
	b.ReportMetric(float64(blocks.Stats().BuffersReused)/float64(b.N), "reused/GiB")
}

// staticAuth is an ncw/swift Authenticator with a fixed storage URL.
type staticAuth string

func (a staticAuth) Request(context.Context, *swift.Connection) (*http.Request, error) {
	return nil, nil
}
func (a staticAuth) Response(context.Context, *http.Response) error { return nil }
func (a staticAuth) StorageUrl(bool) string                         { return string(a) }
func (a staticAuth) Token() string                                  { return "bench" }
func (a staticAuth) CdnUrl() string                                 { return "" }

func processCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

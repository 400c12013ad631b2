package segments

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Benchmarks of SwiftStore's body paths over loopback HTTP (an httptest
// server), without the lab: the client's CPU per byte of GET and PUT
// bodies, for profiles (test/bench/READ.md, WRITE.md):
//
//	go test -run '^$' -bench BenchmarkSwiftStore -cpuprofile /tmp/cpu.out ./segments

func benchStore(b *testing.B, body []byte) *SwiftStore {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case "GET":
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body)
		case "PUT":
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
		}
	}))
	b.Cleanup(srv.Close)
	return NewSwiftStore(SwiftOptions{Auth: &rotatingAuth{base: srv.URL}, ConnectTimeout: 5 * time.Second, Timeout: 5 * time.Second})
}

// cpuPerGiB reports the process's CPU seconds (user and system, the test
// server's included) per GiB moved since start.
func cpuPerGiB(b *testing.B, start float64, bytes int64) {
	b.ReportMetric((cpuNow()-start)/(float64(bytes)/(1<<30)), "cpu-s/GiB")
}

func cpuNow() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// blockSink reads bodies into 256 KiB buffers, as the block cache does.
type blockSink struct{ buf []byte }

func (s *blockSink) Write(p []byte) (int, error) { return len(p), nil }
func (s *blockSink) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		n, err := r.Read(s.buf)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func BenchmarkSwiftStoreGet(b *testing.B) {
	const n = 8 << 20
	st := benchStore(b, make([]byte, n))
	sink := &blockSink{buf: make([]byte, 256<<10)}
	b.SetBytes(n)
	cpu := cpuNow()
	for b.Loop() {
		rc, err := st.Get(b.Context(), "c", "o", 0, n, "")
		if err != nil {
			b.Fatal(err)
		}
		if got, err := io.Copy(sink, rc); err != nil || got != n {
			b.Fatalf("%d bytes, %v", got, err)
		}
		rc.Close()
	}
	cpuPerGiB(b, cpu, int64(b.N)*n)
}

func BenchmarkSwiftStorePut(b *testing.B) {
	const n = 32 << 20
	st := benchStore(b, nil)
	body := bytes.NewReader(make([]byte, n))
	b.SetBytes(n)
	cpu := cpuNow()
	for b.Loop() {
		if _, err := st.Put(b.Context(), "c", "o", body, n, "", PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	cpuPerGiB(b, cpu, int64(b.N)*n)
}

// BenchmarkLoopbackWrite is the CPU of sending over a loopback TCP socket
// (both ends, this process) in writes of 32 KiB, as net/http sends a PUT
// body (io.Copy through its LimitedReader), against writes of 1 MiB.
func BenchmarkLoopbackWrite(b *testing.B) {
	for _, chunk := range []int{32 << 10, 1 << 20} {
		b.Run(strconv.Itoa(chunk>>10)+"KiB", func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.Copy(io.Discard, c)
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			src := make([]byte, 32<<20)
			b.SetBytes(int64(len(src)))
			cpu := cpuNow()
			for b.Loop() {
				for off := 0; off < len(src); off += chunk {
					if _, err := c.Write(src[off : off+chunk]); err != nil {
						b.Fatal(err)
					}
				}
			}
			cpuPerGiB(b, cpu, int64(b.N)*int64(len(src)))
		})
	}
}

package labtest

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FaultProxy sits between imagefs and the lab's Swift proxy and fails the
// requests a rule picks. imagefs reaches it through --os-storage-url.
type FaultProxy struct {
	StorageURL string // give this to imagefs (--os-storage-url)
	mu         sync.Mutex
	rule       func(r *http.Request) (status int, fail bool)
	fault      func(r *http.Request) Fault
	Requests   atomic.Int64 // requests seen
	Faults     atomic.Int64 // requests failed
	seen       []Req        // guarded by mu
}

// Req is a request the proxy saw, with what it forwarded of the answer.
type Req struct {
	Method, Path, Query string
	Range               string // the Range header
	Status              int    // 0 if the proxy answered with a fault
	Bytes               int64  // response body bytes forwarded
}

// Seen returns the requests seen so far, in order of completion.
func (fp *FaultProxy) Seen() []Req {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return append([]Req(nil), fp.seen...)
}

// DataGETs sums the ranged GETs of object data (manifest and listing
// requests left out) seen so far: how many, and the bytes forwarded.
func (fp *FaultProxy) DataGETs() (n int, bytes int64) {
	for _, q := range fp.Seen() {
		if q.Method == http.MethodGet && q.Range != "" {
			n++
			bytes += q.Bytes
		}
	}
	return n, bytes
}

// NewFaultProxy starts a proxy in front of the lab Swift the keeper's
// storage URL points to.
func NewFaultProxy(t testing.TB) *FaultProxy {
	t.Helper()
	real, err := url.Parse(Keeper.Current().StorageURL)
	if err != nil {
		t.Fatal(err)
	}
	target := &url.URL{Scheme: real.Scheme, Host: real.Host}
	rp := httputil.NewSingleHostReverseProxy(target)
	fp := &FaultProxy{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.Requests.Add(1)
		fp.mu.Lock()
		rule, fault := fp.rule, fp.fault
		fp.mu.Unlock()
		q := Req{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Range: r.Header.Get("Range")}
		cw := &countingWriter{ResponseWriter: w, r: r}
		defer func() {
			q.Bytes, q.Status = cw.n, cw.status
			fp.mu.Lock()
			fp.seen = append(fp.seen, q)
			fp.mu.Unlock()
		}()
		if fault != nil {
			if f := fault(r); f != (Fault{}) {
				fp.Faults.Add(1)
				if f.Delay > 0 {
					t := time.NewTimer(f.Delay)
					select {
					case <-t.C:
					case <-r.Context().Done():
					}
					t.Stop()
					if f.Status == 0 && !f.Reset && f.CutAfter == 0 {
						rp.ServeHTTP(cw, r)
						return
					}
				}
				if f.CutAfter > 0 || f.Flip > 0 {
					cw.cut, cw.stall, cw.flip = f.CutAfter, f.Stall, f.Flip
					rp.ServeHTTP(cw, r)
					return
				}
				f.serve(w, r)
				return
			}
		}
		if rule != nil {
			if status, fail := rule(r); fail {
				fp.Faults.Add(1)
				w.WriteHeader(status)
				return
			}
		}
		rp.ServeHTTP(cw, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	fp.StorageURL = "http://" + l.Addr().String() + real.Path
	return fp
}

// SetRule installs the rule that picks the requests to fail (nil: none).
func (fp *FaultProxy) SetRule(rule func(r *http.Request) (int, bool)) {
	fp.mu.Lock()
	fp.rule = rule
	fp.mu.Unlock()
}

// Fault is what the proxy does instead of forwarding a request. The zero
// Fault forwards it.
type Fault struct {
	Status     int    // answer with this status (and an empty body)
	RetryAfter string // with this Retry-After header
	// Reset reads a part of the request body, then closes the connection
	// without an answer, as a crashing proxy or a network failure does.
	Reset bool
	// CutAfter > 0 forwards the request, then resets the connection after
	// that many bytes of the response body: a download broken mid-body.
	CutAfter int64
	// Stall, with CutAfter, first sends nothing for this long (or until
	// the client gives up): a server that hangs mid-body.
	Stall time.Duration
	// Delay holds the request this long first (a slow server); alone, the
	// request is then forwarded.
	Delay time.Duration
	// Flip > 0 forwards the request and flips one bit in every Flip bytes
	// of the response body: a corrupting network or disk.
	Flip int64
}

// countingWriter counts the body bytes forwarded, and cuts the answer
// after cut bytes if cut > 0.
type countingWriter struct {
	http.ResponseWriter
	r      *http.Request
	n      int64
	status int
	cut    int64
	stall  time.Duration
	flip   int64
}

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.flip > 0 {
		q := append([]byte(nil), p...)
		for i := range q {
			if (w.n+int64(i))%w.flip == w.flip/2 {
				q[i] ^= 0x10
			}
		}
		p = q
	}
	if w.cut > 0 && w.n+int64(len(p)) >= w.cut {
		k := w.cut - w.n
		n, _ := w.ResponseWriter.Write(p[:k])
		w.n += int64(n)
		w.breakOff()
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// breakOff sends what was written, optionally stalls, then resets the
// connection and ends the handler.
func (w *countingWriter) breakOff() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	if w.stall > 0 {
		t := time.NewTimer(w.stall)
		select {
		case <-t.C:
		case <-w.r.Context().Done():
		}
		t.Stop()
	}
	if hj, ok := w.ResponseWriter.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST, not FIN
			}
			c.Close()
		}
	}
	panic(http.ErrAbortHandler) // the server drops the connection quietly
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (f Fault) serve(w http.ResponseWriter, r *http.Request) {
	if f.Reset {
		_, _ = io.CopyN(io.Discard, r.Body, 64<<10)
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST, not FIN
				}
				c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	w.WriteHeader(f.Status)
}

// SetFault installs a function that picks a Fault per request (nil: none).
// It is consulted before the rule of SetRule.
func (fp *FaultProxy) SetFault(f func(r *http.Request) Fault) {
	fp.mu.Lock()
	fp.fault = f
	fp.mu.Unlock()
}

// IsSegmentPut matches a PUT of a segment object.
func IsSegmentPut(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "_segments/")
}

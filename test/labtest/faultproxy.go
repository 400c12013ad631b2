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
		if fault != nil {
			if f := fault(r); f != (Fault{}) {
				fp.Faults.Add(1)
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
		rp.ServeHTTP(w, r)
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

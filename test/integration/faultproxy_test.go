//go:build integration

package integration

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// faultProxy sits between imagefs and the lab's Swift proxy and fails the
// requests a rule picks. imagefs reaches it through --os-storage-url.
type faultProxy struct {
	storageURL string // give this to imagefs
	mu         sync.Mutex
	rule       func(r *http.Request) (status int, fail bool)
	requests   atomic.Int64
	faults     atomic.Int64
}

// newFaultProxy starts a proxy in front of the lab Swift the keeper's
// storage URL points to.
func newFaultProxy(t *testing.T) *faultProxy {
	t.Helper()
	real, err := url.Parse(keeper.Current().StorageURL)
	if err != nil {
		t.Fatal(err)
	}
	target := &url.URL{Scheme: real.Scheme, Host: real.Host}
	rp := httputil.NewSingleHostReverseProxy(target)
	fp := &faultProxy{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.requests.Add(1)
		fp.mu.Lock()
		rule := fp.rule
		fp.mu.Unlock()
		if rule != nil {
			if status, fail := rule(r); fail {
				fp.faults.Add(1)
				w.WriteHeader(status)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	fp.storageURL = "http://" + l.Addr().String() + real.Path
	return fp
}

func (fp *faultProxy) setRule(rule func(r *http.Request) (int, bool)) {
	fp.mu.Lock()
	fp.rule = rule
	fp.mu.Unlock()
}

// isSegmentPut matches a PUT of a segment object.
func isSegmentPut(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "_segments/")
}

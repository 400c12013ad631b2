package labtest

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// AnswerProxy sits between imagefs and the lab's Swift proxy, like
// FaultProxy, and lets a test give answers of its own instead: made-up
// headers and bodies, malformed ones included, that a real Swift never
// sends. imagefs reaches it through --os-storage-url.
type AnswerProxy struct {
	StorageURL string // give this to imagefs (--os-storage-url)
	Account    string // the account's path, "/v1/AUTH_<project>"
	mu         sync.Mutex
	answer     func(w http.ResponseWriter, r *http.Request) bool
}

// NewAnswerProxy starts a proxy in front of the lab Swift the keeper's
// storage URL points to; it forwards every request until SetAnswer.
func NewAnswerProxy(t testing.TB) *AnswerProxy {
	t.Helper()
	real, err := url.Parse(Keeper.Current().StorageURL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: real.Scheme, Host: real.Host})
	p := &AnswerProxy{Account: real.Path}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		answer := p.answer
		p.mu.Unlock()
		if answer == nil || !answer(w, r) {
			rp.ServeHTTP(w, r)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p.StorageURL = "http://" + l.Addr().String() + real.Path
	return p
}

// SetAnswer installs f, which answers a request itself and returns true,
// or returns false to have it forwarded (nil: forward everything).
func (p *AnswerProxy) SetAnswer(f func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.answer = f
	p.mu.Unlock()
}

// Path is the URL path of object o of container c (of the container if o
// is empty), as the proxy sees it in r.URL.Path.
func (p *AnswerProxy) Path(c, o string) string {
	if o == "" {
		return p.Account + "/" + c
	}
	return p.Account + "/" + c + "/" + o
}

// RawAnswer writes an answer byte for byte, past net/http's own checks
// (which drop a negative Content-Length, for one), and closes the
// connection. head is the status line's end and the headers, without
// the final blank line: "200 OK\r\nContent-Length: -5".
func RawAnswer(w http.ResponseWriter, head string) {
	c, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer c.Close()
	_, _ = buf.WriteString("HTTP/1.1 " + head + "\r\nConnection: close\r\n\r\n")
	_ = buf.Flush()
}

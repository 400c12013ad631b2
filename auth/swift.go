package auth

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ncw/swift/v2"
)

// Authenticator returns the keeper as an ncw/swift Authenticator. It never
// talks to Keystone itself: it hands out the keeper's current storage URL
// and token. It reports no expiry (ncw/swift would otherwise consider a
// token with less than 60 s left unusable and fail), because the Transport
// stamps the freshest token on every request anyway and the keeper renews
// it in time.
func (k *Keeper) Authenticator() swift.Authenticator { return &swiftAuth{k: k} }

type swiftAuth struct {
	k   *Keeper
	cur *Credential // snapshot taken in Request; ncw/swift holds its lock around the calls
}

func (a *swiftAuth) Request(ctx context.Context, c *swift.Connection) (*http.Request, error) {
	a.cur = a.k.active()
	return nil, nil
}
func (a *swiftAuth) Response(ctx context.Context, resp *http.Response) error { return nil }
func (a *swiftAuth) StorageUrl(internal bool) string                         { return a.cur.StorageURL }
func (a *swiftAuth) Token() string                                           { return string(a.cur.Token) }
func (a *swiftAuth) CdnUrl() string                                          { return "" }
func (a *swiftAuth) Expires() time.Time                                      { return time.Time{} }

// Transport wraps base so that every request to Swift carries the keeper's
// current token (and service token), waits for a renewal when the token is
// about to expire, and a 401 renews it once for everybody before ncw/swift
// resends the request (rewinding its body: Put bodies are Seekers).
// Requests to any other host (scheme, host and port of the storage URL),
// such as redirects, go without the tokens.
func (k *Keeper) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{k: k, base: base, live: map[*http.Request]context.CancelFunc{}}
}

type transport struct {
	k    *Keeper
	base http.RoundTripper

	mu   sync.Mutex                           // guards live
	live map[*http.Request]context.CancelFunc // requests in RoundTrip, by the caller's pointer
}

// RoundTrip sets the tokens on the caller's request (the header map is
// shared with the copy sent). ncw/swift cancels a request by its pointer
// (CancelRequest): when it times out, possibly while RoundTrip waits for a
// renewal, and when a response body stays idle too long. The request is
// therefore tracked by that pointer until its body is closed, and sent
// with a context CancelRequest cancels (which also works for HTTP/2, unlike
// http.Transport.CancelRequest). The context must outlive RoundTrip:
// cancelling it aborts the body.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	t.mu.Lock()
	t.live[req] = cancel
	t.mu.Unlock()
	var once sync.Once
	done := func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.live, req)
			t.mu.Unlock()
			cancel()
		})
	}

	c, err := t.k.Wait(ctx)
	if err != nil {
		done()
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	out := req.WithContext(ctx)
	if req.URL.Scheme == "" && req.URL.Host == "" {
		// ncw/swift read its StorageUrl while another request's 401 had
		// cleared it (UnAuthenticate) and before a third one set it
		// again: the URL is only the path below the storage URL.
		if u, err := url.Parse(strings.TrimSuffix(c.StorageURL, "/") + req.URL.EscapedPath()); err == nil {
			u.RawQuery = req.URL.RawQuery
			out.URL, out.Host = u, u.Host
		}
	}
	swift := sameOrigin(out.URL, c.StorageURL)
	if swift {
		req.Header.Set("X-Auth-Token", string(c.Token))
		if c.ServiceToken != "" {
			req.Header.Set("X-Service-Token", string(c.ServiceToken))
		} else {
			req.Header.Del("X-Service-Token")
		}
	} else {
		// Another host: a redirect that http.Client follows with the
		// original request's headers (it drops only Authorization and
		// Cookie), ncw/swift's X-Auth-Token included. The tokens stay home.
		t.k.log.Debug("request to another host than Swift's (a redirect?): sent without the tokens", "host", req.URL.Host)
		out.Header = req.Header.Clone()
		out.Header.Del("X-Auth-Token")
		out.Header.Del("X-Service-Token")
	}
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		done()
		return nil, err
	}
	resp.Request = req
	resp.Body = &trackedBody{ReadCloser: resp.Body, done: done}
	if resp.StatusCode != http.StatusUnauthorized || !swift {
		return resp, nil
	}
	t.k.log.Debug("Swift answered 401", "method", req.Method, "path", req.URL.Path, "gen", c.Gen)
	t.k.rejected(ctx, c)
	if ctx.Err() != nil && req.Context().Err() == nil {
		// Cancelled (timed out by ncw/swift) while renewing: nobody reads
		// the response any more.
		resp.Body.Close()
		return nil, ctx.Err()
	}
	return resp, nil
}

// sameOrigin reports whether u has the scheme, host and port of the URL
// base (default ports made explicit, names compared without case).
func sameOrigin(u *url.URL, base string) bool {
	b, err := url.Parse(base)
	if err != nil {
		return false
	}
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		switch strings.ToLower(u.Scheme) {
		case "http":
			return "80"
		case "https":
			return "443"
		}
		return ""
	}
	return b.Host != "" && strings.EqualFold(u.Scheme, b.Scheme) && strings.EqualFold(u.Hostname(), b.Hostname()) && port(u) == port(b)
}

// trackedBody ends the request's tracking when the body is closed.
type trackedBody struct {
	io.ReadCloser
	done func()
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// CancelRequest cancels a request in RoundTrip, including one waiting for
// a renewal.
func (t *transport) CancelRequest(req *http.Request) {
	t.mu.Lock()
	cancel := t.live[req]
	t.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (t *transport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

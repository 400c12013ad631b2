package auth

import (
	"context"
	"net/http"
	"time"

	"github.com/ncw/swift/v2"
)

// Authenticator returns the keeper as an ncw/swift Authenticator. It never
// talks to Keystone itself: it hands out the keeper's current storage URL
// and token. It reports no expiry, because the Transport stamps the
// freshest token on every request anyway and the keeper renews it in time.
func (k *Keeper) Authenticator() swift.Authenticator { return &swiftAuth{k: k} }

type swiftAuth struct {
	k   *Keeper
	cur *Credential // snapshot taken in Request; ncw/swift holds its lock around the calls
}

func (a *swiftAuth) Request(ctx context.Context, c *swift.Connection) (*http.Request, error) {
	a.cur = a.k.Current()
	return nil, nil
}
func (a *swiftAuth) Response(ctx context.Context, resp *http.Response) error { return nil }
func (a *swiftAuth) StorageUrl(internal bool) string                         { return a.cur.StorageURL }
func (a *swiftAuth) Token() string                                           { return string(a.cur.Token) }
func (a *swiftAuth) CdnUrl() string                                          { return "" }
func (a *swiftAuth) Expires() time.Time                                      { return time.Time{} }

// Transport wraps base so that every request carries the keeper's current
// token, and a 401 renews it once for everybody (ncw/swift then resends the
// request, rewinding its body).
func (k *Keeper) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{k: k, base: base}
}

type transport struct {
	k    *Keeper
	base http.RoundTripper
}

// minTokenAge keeps a Swift that answers 401 to every fresh token (a
// missing role, say) from turning each request into a Keystone login.
const minTokenAge = 10 * time.Second

// RoundTrip sets the token on req itself rather than on a clone: ncw/swift
// cancels requests by pointer (CancelRequest), so the request sent must be
// the one it holds.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := t.k.Current()
	req.Header.Set("X-Auth-Token", string(c.Token))
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && t.k.now().Sub(c.Issued) > minTokenAge {
		_, _ = t.k.Invalidate(req.Context(), c.Gen)
	}
	return resp, err
}

func (t *transport) CancelRequest(req *http.Request) {
	if cr, ok := t.base.(interface{ CancelRequest(*http.Request) }); ok {
		cr.CancelRequest(req)
	}
}

func (t *transport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

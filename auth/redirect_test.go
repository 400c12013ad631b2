package auth

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// tokenHeaders are the headers that carry tokens.
var tokenHeaders = []string{"X-Auth-Token", "X-Service-Token", "X-Subject-Token"}

// elsewhere is another host (another port of 127.0.0.1: another origin) that
// records what reaches it.
type elsewhere struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits int
	seen []string // token headers and secrets it received
}

func newElsewhere(t *testing.T, secrets ...string) *elsewhere {
	e := &elsewhere{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.hits++
		for _, h := range tokenHeaders {
			if r.Header.Get(h) != "" {
				e.seen = append(e.seen, h)
			}
		}
		for _, s := range secrets {
			if strings.Contains(string(body), s) || strings.Contains(r.URL.String(), s) {
				e.seen = append(e.seen, "a secret in the request")
			}
		}
		e.mu.Unlock()
		sum := md5.Sum([]byte("elsewhere"))
		w.Header().Set("Etag", hex.EncodeToString(sum[:]))
		w.Write([]byte("elsewhere"))
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *elsewhere) check(t *testing.T, wantHits bool) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) > 0 {
		t.Errorf("the other host received %v", e.seen)
	}
	if wantHits && e.hits == 0 {
		t.Error("the redirect was not followed: the test proves nothing")
	}
	if !wantHits && e.hits > 0 {
		t.Errorf("the other host got %d requests", e.hits)
	}
}

// front serves the double, except that the requests redirect picks are
// redirected with code to the same path on to (a base URL).
func front(t *testing.T, d *double, code int, to string, redirect func(*http.Request) bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if redirect(r) {
			http.Redirect(w, r, to+r.URL.RequestURI(), code)
			return
		}
		d.serve(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestSwiftRedirectKeepsTokens: a Swift that redirects to another host
// (301, 302, 307) gets the tokens itself, the other host never sees them;
// a redirect on Swift's own host still carries them.
func TestSwiftRedirectKeepsTokens(t *testing.T) {
	d := newDouble(t)
	userTok := d.mint("u-demo", dUserProject, "member")
	for _, mode := range []struct {
		name string
		cfg  Config
	}{
		{"password", Config{Identity: demoUser}},
		{"service token", Config{Token: Secret(userTok), Service: svcUser}},
	} {
		for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect} {
			t.Run(mode.name+"/"+http.StatusText(code), func(t *testing.T) {
				e := newElsewhere(t)
				f := front(t, d, code, e.srv.URL, func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/moved") })
				cfg := mode.cfg
				cfg.StorageURL = f.URL + "/v1/AUTH_" + dUserProject
				k, _ := newDoubleKeeper(t, d, cfg)
				sc := conn(k)
				if err := put(t.Context(), sc, "c", "o", []byte("hello")); err != nil {
					t.Fatalf("PUT to Swift itself: %v", err)
				}
				b, err := sc.ObjectGetBytes(t.Context(), "c", "moved")
				if err != nil || string(b) != "elsewhere" {
					t.Errorf("GET through the redirect: %q %v", b, err)
				}
				// Without ncw/swift: a plain client on the transport.
				hc := &http.Client{Transport: k.Transport(nil)}
				resp, err := hc.Get(k.Current().StorageURL + "/c/moved")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				e.check(t, true)
			})
		}
	}
	// On Swift's own host the redirect keeps the tokens (the double
	// answers 401 without them).
	k, _ := newDoubleKeeper(t, d, Config{Identity: demoUser})
	sc := conn(k)
	if err := put(t.Context(), sc, "c", "here", []byte("on Swift")); err != nil {
		t.Fatal(err)
	}
	f := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/moved") {
			http.Redirect(w, r, strings.TrimSuffix(r.URL.Path, "moved")+"here", http.StatusFound)
			return
		}
		d.serve(w, r)
	}))
	defer f.Close()
	k2, _ := newDoubleKeeper(t, d, Config{Identity: demoUser, StorageURL: f.URL + "/v1/AUTH_" + dUserProject})
	if b, err := conn(k2).ObjectGetBytes(t.Context(), "c", "moved"); err != nil || string(b) != "on Swift" {
		t.Errorf("GET through a redirect on Swift's host: %q %v", b, err)
	}
}

// TestKeystoneRedirectRefused: Keystone redirecting to another host gets
// no request through, neither the POST with the password (307 resends the
// body) nor the token validation with X-Auth-Token and X-Subject-Token; the
// error says why. Redirects on Keystone's own host are followed.
func TestKeystoneRedirectRefused(t *testing.T) {
	d := newDouble(t)
	userTok := d.mint("u-demo", dUserProject, "member")
	post := func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v3/auth/tokens")
	}
	validate := func(r *http.Request) bool { return r.Method == http.MethodGet && r.URL.Path == "/v3/auth/tokens" }
	for _, tc := range []struct {
		name     string
		code     int
		cfg      Config
		redirect func(*http.Request) bool
	}{
		{"password POST, 307", http.StatusTemporaryRedirect, Config{Identity: demoUser}, post},
		{"password POST, 308", http.StatusPermanentRedirect, Config{Identity: demoUser}, post},
		{"password POST, 302", http.StatusFound, Config{Identity: demoUser}, post},
		{"user token validation, 301", http.StatusMovedPermanently, Config{Token: Secret(userTok), Service: svcUser}, validate},
		{"user token validation, 307", http.StatusTemporaryRedirect, Config{Token: Secret(userTok), Service: svcUser}, validate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newElsewhere(t, "demo-pw", "svc-pw", userTok)
			f := front(t, d, tc.code, e.srv.URL, tc.redirect)
			cfg := tc.cfg
			cfg.AuthURL = f.URL + "/v3"
			_, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "redirected to "+e.srv.URL+", another host: not followed") {
				t.Errorf("New: %v, want the refused redirect", err)
			}
			for _, s := range []string{"demo-pw", "svc-pw", userTok} {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Error("the error shows a secret")
				}
			}
			e.check(t, false)
		})
	}
	// A redirect on Keystone's own host (here to the path with a trailing
	// slash) is followed.
	f := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v3/auth/tokens" {
			http.Redirect(w, r, "/v3/auth/tokens/", http.StatusTemporaryRedirect)
			return
		}
		d.serve(w, r)
	}))
	defer f.Close()
	if _, err := New(t.Context(), Config{Identity: demoUser, AuthURL: f.URL + "/v3"}, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("a redirect on Keystone's host: %v", err)
	}
}

func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		u, base string
		want    bool
	}{
		{"http://swift.example/v1/AUTH_x/c/o", "http://swift.example/v1/AUTH_x", true},
		{"http://swift.example:80/v1/AUTH_x/c/o", "http://SWIFT.example/v1/AUTH_x", true},
		{"https://swift.example/v1/AUTH_x", "https://swift.example:443/v1/AUTH_x", true},
		{"http://[::1]:8080/v1", "http://[::1]:8080/v1/AUTH_x", true},
		{"https://swift.example/v1/AUTH_x", "http://swift.example/v1/AUTH_x", false},
		{"http://swift.example:8080/v1/AUTH_x", "http://swift.example/v1/AUTH_x", false},
		{"http://127.0.0.1:8081/v1/AUTH_x", "http://127.0.0.1:8080/v1/AUTH_x", false},
		{"http://swift.example.evil/v1/AUTH_x", "http://swift.example/v1/AUTH_x", false},
		{"http://swift.example/v1", "", false},
		{"http://swift.example/v1", "%zz", false},
	} {
		u, err := url.Parse(tc.u)
		if err != nil {
			t.Fatal(err)
		}
		if got := sameOrigin(u, tc.base); got != tc.want {
			t.Errorf("sameOrigin(%s, %s) = %v", tc.u, tc.base, got)
		}
	}
}

package auth

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// double is an httptest Keystone v3 + Swift, enough for the keeper: it
// issues tokens for passwords, application credentials and trusts,
// validates user tokens for the service user, and serves objects to
// requests whose tokens it knows (IMAGE_ accounts also need a service
// token), like keystonemiddleware + keystoneauth.
type double struct {
	t   *testing.T
	srv *httptest.Server

	lifetime time.Duration

	mu          sync.Mutex
	tokens      map[string]dtoken // by id
	objects     map[string][]byte // by path
	bodies      []map[string]any  // POST /v3/auth/tokens bodies
	trusts      map[string]bool   // existing trusts
	appCredExp  string            // expires_at of app cred "ac1" (Keystone's format, no zone)
	demoPW      string            // the demo user's password
	keystoneOff atomic.Bool       // answer 503 to everything under /v3
	posts       atomic.Int64      // POST /v3/auth/tokens
	swift401    atomic.Int64
	putSizes    []int // body sizes of accepted PUTs
	seq         int
}

type dtoken struct {
	appCred       string
	user, project string
	roles         []string
	expires       time.Time
	revoked       bool
}

const (
	dUserProject = "p0demo"
	dSvcProject  = "p1svc"
)

func newDouble(t *testing.T) *double {
	d := &double{t: t, lifetime: time.Hour, tokens: map[string]dtoken{}, objects: map[string][]byte{},
		trusts: map[string]bool{"tr1": true}, demoPW: "demo-pw"}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *double) authURL() string { return d.srv.URL + "/v3" }

// mint creates a token.
func (d *double) mint(user, project string, roles ...string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	id := fmt.Sprintf("gAAAAAtok%04d", d.seq)
	d.tokens[id] = dtoken{user: user, project: project, roles: roles, expires: time.Now().Add(d.lifetime)}
	return id
}

func (d *double) revokeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, tk := range d.tokens {
		tk.revoked = true
		d.tokens[id] = tk
	}
}

func (d *double) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/v3"):
		if d.keystoneOff.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		d.keystone(w, r)
	case strings.HasPrefix(r.URL.Path, "/v1/"):
		d.swift(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (d *double) keystone(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case p == "/v3" && r.Method == http.MethodGet:
		json.NewEncoder(w).Encode(map[string]any{"version": map[string]any{"id": "v3.14", "status": "stable"}})
	case p == "/v3/auth/tokens" && r.Method == http.MethodPost:
		d.posts.Add(1)
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		d.mu.Lock()
		d.bodies = append(d.bodies, body)
		d.mu.Unlock()
		d.create(w, body)
	case p == "/v3/auth/tokens" && r.Method == http.MethodGet:
		if r.URL.Query().Get("allow_expired") != "1" {
			d.t.Errorf("user token read without allow_expired=1")
		}
		d.mu.Lock()
		auth, okA := d.tokens[r.Header.Get("X-Auth-Token")]
		subj, okS := d.tokens[r.Header.Get("X-Subject-Token")]
		d.mu.Unlock()
		if !okA || auth.revoked || time.Now().After(auth.expires) {
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		if !okS || subj.revoked {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		d.writeToken(w, r.Header.Get("X-Subject-Token"), subj, http.StatusOK)
	case strings.HasPrefix(p, "/v3/users/") && strings.Contains(p, "/application_credentials/"):
		d.mu.Lock()
		exp := d.appCredExp
		d.mu.Unlock()
		var e any
		if exp != "" {
			e = exp
		}
		json.NewEncoder(w).Encode(map[string]any{"application_credential": map[string]any{"id": "ac1", "expires_at": e}})
	default:
		http.NotFound(w, r)
	}
}

func (d *double) create(w http.ResponseWriter, body map[string]any) {
	get := func(m any, path ...string) any {
		for _, k := range path {
			mm, ok := m.(map[string]any)
			if !ok {
				return nil
			}
			m = mm[k]
		}
		return m
	}
	ident := get(body, "auth", "identity")
	scope := get(body, "auth", "scope")
	var user, project string
	var roles []string
	switch {
	case get(ident, "password") != nil:
		name, _ := get(ident, "password", "user", "name").(string)
		pw, _ := get(ident, "password", "user", "password").(string)
		d.mu.Lock()
		demoPW := d.demoPW
		d.mu.Unlock()
		switch {
		case name == "demo" && pw == demoPW:
			user, project, roles = "u-demo", dUserProject, []string{"member"}
		case name == "svc" && pw == "svc-pw":
			user, project, roles = "u-svc", dSvcProject, []string{"service", "member"}
		default:
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		if tr, _ := get(scope, "OS-TRUST:trust", "id").(string); tr != "" {
			d.mu.Lock()
			ok := d.trusts[tr]
			d.mu.Unlock()
			if !ok || user != "u-svc" {
				http.Error(w, "auth", http.StatusUnauthorized)
				return
			}
			user, project, roles = "u-demo", dUserProject, []string{"member"}
		} else if scope == nil {
			project = ""
		}
	case get(ident, "application_credential") != nil:
		if scope != nil {
			http.Error(w, "Application credentials cannot request a scope", http.StatusUnauthorized)
			return
		}
		id, _ := get(ident, "application_credential", "id").(string)
		secret, _ := get(ident, "application_credential", "secret").(string)
		if id != "ac1" {
			http.Error(w, "Could not find Application Credential", http.StatusNotFound)
			return
		}
		if secret != "ac-secret" {
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		user, project, roles = "u-demo", dUserProject, []string{"member"}
	default:
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	id := d.mint(user, project, roles...)
	d.mu.Lock()
	tk := d.tokens[id]
	if get(ident, "application_credential") != nil {
		tk.appCred = "ac1"
		d.tokens[id] = tk
	}
	d.mu.Unlock()
	d.writeToken(w, id, tk, http.StatusCreated)
}

func (d *double) writeToken(w http.ResponseWriter, id string, tk dtoken, status int) {
	issued := tk.expires.Add(-d.lifetime)
	var rs []map[string]string
	for _, r := range tk.roles {
		rs = append(rs, map[string]string{"name": r})
	}
	t := map[string]any{
		"issued_at":  issued.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"expires_at": tk.expires.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"user":       map[string]string{"id": tk.user},
		"roles":      rs,
		"catalog": []any{map[string]any{"type": "object-store", "name": "swift", "endpoints": []any{
			map[string]string{"interface": "public", "region": "R1", "region_id": "R1", "url": d.srv.URL + "/v1/AUTH_" + tk.project},
		}}},
	}
	if tk.project != "" {
		t["project"] = map[string]string{"id": tk.project}
	}
	if tk.appCred != "" {
		t["application_credential"] = map[string]any{"id": tk.appCred, "name": "n", "restricted": true}
	}
	w.Header().Set("X-Subject-Token", id)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"token": t})
}

// swift accepts a request whose X-Auth-Token is valid for the account
// (expired user tokens too, with a valid service token), and for IMAGE_
// accounts only with a service token of role service.
func (d *double) swift(w http.ResponseWriter, r *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/v1/"), "/", 2)
	account := parts[0]
	d.mu.Lock()
	ut, okU := d.tokens[r.Header.Get("X-Auth-Token")]
	st, okS := d.tokens[r.Header.Get("X-Service-Token")]
	d.mu.Unlock()
	now := time.Now()
	svcValid := okS && !st.revoked && now.Before(st.expires) && contains(st.roles, "service")
	userValid := okU && !ut.revoked && (now.Before(ut.expires) || svcValid)
	prefix, project, _ := strings.Cut(account, "_")
	if !userValid || project != ut.project || (prefix == "IMAGE" && !svcValid) {
		d.swift401.Add(1)
		http.Error(w, "401", http.StatusUnauthorized)
		return
	}
	switch r.Method {
	case http.MethodPut:
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		d.mu.Lock()
		d.objects[r.URL.Path] = b
		d.putSizes = append(d.putSizes, len(b))
		d.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet, http.MethodHead:
		if strings.HasSuffix(r.URL.Path, "/stall") {
			// Headers and a little data, then nothing until the client
			// gives up.
			w.Header().Set("Content-Length", "1000000")
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		d.mu.Lock()
		b, ok := d.objects[r.URL.Path]
		d.mu.Unlock()
		if !ok && len(parts) > 1 && strings.Contains(parts[1], "/") {
			http.NotFound(w, r)
			return
		}
		sum := md5.Sum(b)
		w.Header().Set("Etag", hex.EncodeToString(sum[:]))
		w.Write(b)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

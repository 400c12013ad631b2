package auth

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ncw/swift/v2"
)

var (
	demoUser = Identity{Username: "demo", Password: "demo-pw", UserDomainName: "Default", ProjectName: "demo"}
	svcUser  = Identity{Username: "svc", Password: "svc-pw", UserDomainName: "Default", ProjectName: "service"}
	// svcTrustee is svcUser as keystoneauth's trustee: no project.
	svcTrustee = Identity{Username: "svc", Password: "svc-pw", UserDomainName: "Default"}
)

// conn is an ncw/swift connection through the keeper, as segments builds it.
func conn(k *Keeper) *swift.Connection {
	return &swift.Connection{Auth: k.Authenticator(), Transport: k.Transport(nil), Retries: 1,
		ConnectTimeout: 5 * time.Second, Timeout: 5 * time.Second}
}

// put stores data the way segments does: a Seeker body, its MD5 as ETag.
func put(ctx context.Context, c *swift.Connection, container, name string, data []byte) error {
	sum := md5.Sum(data)
	_, err := c.ObjectPut(ctx, container, name, bytes.NewReader(data), false, hex.EncodeToString(sum[:]), "", nil)
	return err
}

func newDoubleKeeper(t *testing.T, d *double, cfg Config) (*Keeper, *logBuffer) {
	t.Helper()
	log, lb := testLogger()
	cfg.AuthURL = d.authURL()
	k, err := New(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return k, lb
}

// TestModes: each mode sends what Keystone expects and ends up on the
// right account.
func TestModes(t *testing.T) {
	d := newDouble(t)
	userTok := d.mint("u-demo", dUserProject, "member")
	for _, tc := range []struct {
		name        string
		cfg         Config
		account     string
		wantScope   string // JSON key expected in auth.scope, "" for none
		wantService bool
	}{
		{"password", Config{Identity: demoUser}, "AUTH_" + dUserProject, "project", false},
		{"application credential", Config{Identity: Identity{ApplicationCredentialID: "ac1", ApplicationCredentialSecret: "ac-secret",
			ProjectName: "ignored"}}, "AUTH_" + dUserProject, "", false},
		{"trust", Config{TrustID: "tr1", Service: svcUser}, "AUTH_" + dUserProject, "OS-TRUST:trust", false},
		{"trust, trustee from OS_*", Config{TrustID: "tr1", Identity: svcTrustee}, "AUTH_" + dUserProject, "OS-TRUST:trust", false},
		// keystoneauth's form: OS_AUTH_TYPE=password with OS_TRUST_ID.
		{"trust, auth type password", Config{Mode: ModePassword, TrustID: "tr1", Identity: svcTrustee}, "AUTH_" + dUserProject, "OS-TRUST:trust", false},
		{"service token", Config{Token: Secret(userTok), Service: svcUser}, "IMAGE_" + dUserProject, "project", true},
		{"service token, other prefix", Config{Token: Secret(userTok), Service: svcUser, ResellerPrefix: "GLANCE"}, "GLANCE_" + dUserProject, "project", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d.mu.Lock()
			d.bodies = nil
			d.mu.Unlock()
			k, _ := newDoubleKeeper(t, d, tc.cfg)
			c := k.Current()
			if want := d.srv.URL + "/v1/" + tc.account; c.StorageURL != want {
				t.Errorf("storage URL %s, want %s", c.StorageURL, want)
			}
			if (c.ServiceToken != "") != tc.wantService {
				t.Errorf("service token %q", c.ServiceToken)
			}
			d.mu.Lock()
			body := d.bodies[0]
			d.mu.Unlock()
			scope, _ := body["auth"].(map[string]any)["scope"].(map[string]any)
			if tc.wantScope == "" && scope != nil {
				t.Errorf("sent a scope: %v", scope)
			}
			if tc.wantScope != "" && scope[tc.wantScope] == nil {
				t.Errorf("scope %v has no %s", scope, tc.wantScope)
			}
			// A PUT and GET through ncw/swift with the keeper's
			// Authenticator and Transport.
			sc := conn(k)
			if err := put(t.Context(), sc, "c", "o", []byte("hello")); err != nil {
				t.Fatalf("PUT: %v", err)
			}
			if b, err := sc.ObjectGetBytes(t.Context(), "c", "o"); err != nil || string(b) != "hello" {
				t.Errorf("GET: %q %v", b, err)
			}
		})
	}
}

// TestServiceTokenOutlivesUserToken: the user token expires, the service
// token is renewed, and Swift (like keystonemiddleware) keeps accepting
// the pair; the user token alone is refused on IMAGE_.
func TestServiceTokenOutlivesUserToken(t *testing.T) {
	d := newDouble(t)
	d.lifetime = 3 * time.Second
	userTok := d.mint("u-demo", dUserProject, "member")
	k, _ := newDoubleKeeper(t, d, Config{Token: Secret(userTok), Service: svcUser})
	sc := conn(k)
	ctx := t.Context()
	if err := put(ctx, sc, "c", "before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	// The user token alone: refused.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, k.Current().StorageURL+"/c/before", nil)
	req.Header.Set("X-Auth-Token", userTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("user token alone on IMAGE_: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	time.Sleep(3500 * time.Millisecond) // both tokens expired
	if _, err := k.renew(ctx, k.Current().Gen, "test", true); err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, sc, "c", "after", []byte("2")); err != nil {
		t.Fatalf("PUT after the user token expired: %v", err)
	}
	if got := string(k.Current().Token); got != userTok {
		t.Error("the user token changed")
	}
}

// Test401RenewsOnceAndResendsBodies: Swift starts refusing every token;
// twenty concurrent PUTs cause one renewal and all arrive whole.
func Test401RenewsOnceAndResendsBodies(t *testing.T) {
	d := newDouble(t)
	k, _ := newDoubleKeeper(t, d, Config{Identity: demoUser})
	k.cur.Load().Issued = time.Now().Add(-time.Minute) // older than minTokenAge
	sc := conn(k)
	ctx := t.Context()
	if err := put(ctx, sc, "c", "warm", []byte("x")); err != nil {
		t.Fatal(err)
	}
	d.revokeAll()
	posts := d.posts.Load()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			data := bytes.Repeat([]byte{byte(i)}, 100000+i)
			if err := put(ctx, sc, "c", fmt.Sprint("o", i), data); err != nil {
				t.Errorf("PUT %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if n := d.posts.Load() - posts; n != 1 {
		t.Errorf("%d renewals for 20 requests refused at once, want 1", n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range 20 {
		if b := d.objects["/v1/AUTH_"+dUserProject+"/c/o"+fmt.Sprint(i)]; len(b) != 100000+i {
			t.Errorf("object %d has %d bytes", i, len(b))
		}
	}
	if r := k.Stats().Rejections; r < 1 || r > 20 {
		t.Errorf("%d rejections counted", r)
	}
}

// TestTransportEmptyStorageURL: a request whose URL is only a path (ncw/swift
// read its StorageUrl in the moment another request's 401 had cleared it)
// goes to the keeper's storage URL, with the token, not to "" (which fails
// with "unsupported protocol scheme": Test401RenewsOnceAndResendsBodies
// saw it once).
func TestTransportEmptyStorageURL(t *testing.T) {
	d := newDouble(t)
	k, _ := newDoubleKeeper(t, d, Config{Identity: demoUser})
	if err := put(t.Context(), conn(k), "c", "o", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: k.Transport(nil)}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "/c/o?x=1", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET of a bare path: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "hello" {
		t.Errorf("GET of a bare path: %s %q", resp.Status, b)
	}
}

// TestCancelWhileWaitingForRenewal: a request held because the token is
// about to expire and Keystone is down ends when ncw/swift gives up on it
// (CancelRequest), instead of hanging.
func TestCancelWhileWaitingForRenewal(t *testing.T) {
	d := newDouble(t)
	d.lifetime = 8 * time.Second
	k, _ := newDoubleKeeper(t, d, Config{Identity: demoUser})
	d.keystoneOff.Store(true)
	time.Sleep(6500 * time.Millisecond) // less than a quarter of the lifetime left
	sc := conn(k)
	sc.ConnectTimeout = 300 * time.Millisecond
	start := time.Now()
	err := put(t.Context(), sc, "c", "o", []byte("x"))
	if err == nil {
		t.Fatal("PUT succeeded with an expiring token and Keystone down")
	}
	if !errors.Is(err, swift.TimeoutError) {
		t.Errorf("err %v, want ncw/swift's timeout", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("PUT took %v to give up", el)
	}
	tr := sc.Transport.(*transport)
	time.Sleep(50 * time.Millisecond)
	tr.mu.Lock()
	n := len(tr.live)
	tr.mu.Unlock()
	if n != 0 {
		t.Errorf("%d requests still in RoundTrip", n)
	}
}

// TestErrorsSayWhatToDo: each credential problem gives a one-line error
// naming what to check.
func TestErrorsSayWhatToDo(t *testing.T) {
	d := newDouble(t)
	bad := demoUser
	bad.Password = "pw-not-this"
	badSvc := svcUser
	badSvc.Password = "pw-not-this"
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
		is   error
	}{
		{"wrong password", Config{Identity: bad}, "check the user name, password", ErrCredentials},
		{"unknown application credential", Config{Identity: Identity{ApplicationCredentialID: "nope", ApplicationCredentialSecret: "x"}}, "does not know the application credential nope", ErrCredentials},
		{"wrong application credential secret", Config{Identity: Identity{ApplicationCredentialID: "ac1", ApplicationCredentialSecret: "secret-not-this"}}, "deleted, or expired", ErrCredentials},
		{"deleted trust", Config{TrustID: "gone", Service: svcUser}, "the trust gone does not exist", ErrCredentials},
		{"trustee password", Config{TrustID: "tr1", Service: badSvc}, "the trustee (user svc) cannot log in", ErrCredentials},
		{"bad user token", Config{Token: "gAAAAAbogus", Service: svcUser}, "the user token (OS_TOKEN) is not valid", ErrCredentials},
		{"service password", Config{Token: "gAAAAAbogus", Service: badSvc}, "check the service user's credentials", ErrCredentials},
		{"unreachable", Config{Identity: demoUser, AuthURL: "http://127.0.0.1:9/v3"}, "cannot reach Keystone at http://127.0.0.1:9/v3", ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg.AuthURL == "" {
				cfg.AuthURL = d.authURL()
			}
			_, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want %v saying %q on one line", err, tc.is, tc.want)
			}
			for _, s := range []string{"pw-not-this", "secret-not-this", "svc-pw", "demo-pw", "ac-secret", "gAAAAA"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error shows a secret (%s): %v", s, err)
				}
			}
		})
	}
}

// TestAppCredentialExpiry: the credential's expires_at (Keystone's format
// without a zone) becomes the hard deadline; a token capped at it is Final;
// the warning names the credential.
func TestAppCredentialExpiry(t *testing.T) {
	d := newDouble(t)
	d.lifetime = time.Hour
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	d.appCredExp = exp.Format("2006-01-02T15:04:05.000000")
	k, lb := newDoubleKeeper(t, d, Config{Identity: Identity{ApplicationCredentialID: "ac1", ApplicationCredentialSecret: "ac-secret"}, ExpiryWarning: 2 * time.Hour})
	c := k.Current()
	if off := c.HardDeadline.Sub(exp); off < -2*time.Second || off > 2*time.Second {
		t.Errorf("hard deadline %v, want %v", c.HardDeadline, exp)
	}
	if !c.Final {
		t.Error("a token lasting until the credential's expiry is not Final")
	}
	if !strings.Contains(lb.String(), "application credential expires soon") || !strings.Contains(lb.String(), "application_credential=ac1") {
		t.Errorf("no warning:\n%s", lb)
	}
}

func TestResellerURL(t *testing.T) {
	for _, tc := range []struct{ in, prefix, project, want, err string }{
		{"https://swift.example.com/v1/AUTH_abc", "IMAGE_", "abc", "https://swift.example.com/v1/IMAGE_abc", ""},
		{"https://swift.example.com:8080/swift/v1/AUTH_abc/", "IMAGE_", "abc", "https://swift.example.com:8080/swift/v1/IMAGE_abc", ""},
		{"http://h/v1/KEY_abc", "SERVICE_", "abc", "http://h/v1/SERVICE_abc", ""},
		// AUTH_ also appears in the host and path: only the account changes.
		{"http://auth_abc.example/AUTH_abc/v1/AUTH_abc", "IMAGE_", "abc", "http://auth_abc.example/AUTH_abc/v1/IMAGE_abc", ""},
		{"http://h/v1/AUTH_other", "IMAGE_", "abc", "", "does not end in <prefix>abc"},
		{"http://h/v1/abc", "IMAGE_", "abc", "", "does not end in"},
		{"not a url", "IMAGE_", "abc", "", "not a URL"},
	} {
		got, err := resellerURL(tc.in, tc.prefix, tc.project)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestLargeBodiesAndIdleTimeout: a response body outlives RoundTrip (its
// context stays alive until the body is closed), and ncw/swift's idle
// timeout on a stalled body still cancels it through CancelRequest.
func TestLargeBodiesAndIdleTimeout(t *testing.T) {
	d := newDouble(t)
	k, _ := newDoubleKeeper(t, d, Config{Identity: demoUser})
	sc := conn(k)
	ctx := t.Context()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	if err := put(ctx, sc, "c", "big", big); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var buf bytes.Buffer
		if _, err := sc.ObjectGet(ctx, "c", "big", &buf, true, nil); err != nil || !bytes.Equal(buf.Bytes(), big) {
			t.Fatalf("GET of 16 MiB: %d bytes, %v", buf.Len(), err)
		}
	}
	sc.Timeout = 300 * time.Millisecond
	start := time.Now()
	f, _, err := sc.ObjectOpen(ctx, "c", "stall", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, f)
	f.Close()
	if err == nil {
		t.Error("a stalled body read without error")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("the idle timeout took %v to end a stalled body", el)
	}
	tr := sc.Transport.(*transport)
	tr.mu.Lock()
	n := len(tr.live)
	tr.mu.Unlock()
	if n != 0 {
		t.Errorf("%d requests still tracked after their bodies were closed", n)
	}
}

//go:build integration

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// authMode is one way of mounting: its credentials and its account.
type authMode struct {
	name    string
	env     []string             // added to the lab's OS_* environment
	store   segments.ObjectStore // direct access to the mount's account
	secrets []string             // must never appear in the daemon's log
	check   func(t *testing.T)   // extra checks at the end, while mounted
	args    []string
}

// authModes sets up the four modes against the lab: password (demo),
// application credential (demo's), trust (demo delegates to imagefs) and
// service token (demo's token + imagefs' service token, IMAGE_ account).
func authModes(t *testing.T) []authMode {
	acID, acSecret := labtest.NewAppCredential(t, 3*time.Hour)
	trust := labtest.NewTrust(t)
	userTok := labtest.UserToken(t)
	svc := labtest.ServiceUser()
	demoPW := os.Getenv("OS_PASSWORD")
	// Each mode unsets what belongs to the others, so that the mode is
	// inferred the way an operator's environment would make it.
	return []authMode{
		{name: "password", store: labtest.Swift, secrets: []string{demoPW}},
		{
			name: "application-credential",
			env: []string{"OS_APPLICATION_CREDENTIAL_ID=" + acID, "OS_APPLICATION_CREDENTIAL_SECRET=" + string(acSecret),
				"OS_AUTH_TYPE=v3applicationcredential", "OS_USERNAME=", "OS_PASSWORD=", "OS_PROJECT_NAME="},
			// The credential expires in 3 h: with --expiry-warning 4h the
			// mount warns at once.
			args:    []string{"--expiry-warning", "4h"},
			store:   labtest.Swift,
			secrets: []string{string(acSecret)},
		},
		{
			name:    "trust",
			env:     append(labtest.ServiceUserEnv(), "OS_TRUST_ID="+trust, "OS_USERNAME=", "OS_PASSWORD="),
			store:   labtest.Swift,
			secrets: []string{string(svc.Password), demoPW},
		},
		{
			name:    "service-token",
			env:     append(labtest.ServiceUserEnv(), "OS_TOKEN="+string(userTok), "OS_USERNAME=", "OS_PASSWORD="),
			store:   labtest.ImageStore(t),
			secrets: []string{string(userTok), string(svc.Password)},
		},
	}
}

// TestAuthModesAcrossTokenExpiry is the heart of the token keeper's
// acceptance: in each of the four modes, a throttled copy into the mount
// and a throttled read out of it, running at the same time, each last more
// than four token lifetimes (the lab's tokens live LAB_TOKEN_EXPIRATION,
// 120 s), and both see identical data and no error; the keeper renewed at
// least four times and Swift never answered 401. The modes run
// concurrently (they mostly wait): about 9 minutes in all.
func TestAuthModesAcrossTokenExpiry(t *testing.T) {
	t.Parallel()
	lifetime := labtest.TokenLifetime(t)
	const size = 24 << 20
	duration := 4*lifetime + 40*time.Second
	rate := int64(size / duration.Seconds())

	modes := authModes(t)
	var wg sync.WaitGroup
	for i, m := range modes {
		wg.Go(func() {
			// Subtests run concurrently from these goroutines, outside the
			// -parallel limit (2 on these machines).
			t.Run(m.name, func(t *testing.T) { testModeAcrossExpiry(t, m, i, size, rate, duration) })
		})
	}
	wg.Wait()
}

func testModeAcrossExpiry(t *testing.T, m authMode, seed int, size, rate int64, duration time.Duration) {
	lifetime := labtest.TokenLifetime(t)
	var c string
	if m.store == labtest.Swift {
		c = labtest.NewContainer(t)
	} else {
		c = labtest.NewContainerIn(t, m.store)
	}
	// The object to read, stored directly (fast).
	rsrc, rsum := labtest.RandomFile(t, size, uint64(100+seed))
	data, err := os.ReadFile(rsrc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.store.Put(t.Context(), c, "existing.img", bytes.NewReader(data), size, "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	wsrc, wsum := labtest.RandomFile(t, size, uint64(200+seed))
	args := append([]string{"--segment-size", "1MiB"}, m.args...)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: args, Env: m.env})

	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), duration+5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var werr, rerr error
	readCopy := filepath.Join(t.TempDir(), "read")
	wg.Go(func() { werr = labtest.CopyThrottled(ctx, d.Path("new.img"), wsrc, rate) })
	wg.Go(func() { rerr = labtest.CopyThrottled(ctx, readCopy, d.Path("existing.img"), rate) })
	wg.Wait()
	took := time.Since(start)
	if werr != nil {
		t.Errorf("throttled copy into the mount: %v", werr)
	}
	if rerr != nil {
		t.Errorf("throttled read from the mount: %v", rerr)
	}
	if took < 4*lifetime {
		t.Errorf("the copy took %v, less than 4 token lifetimes (%v): the test proves nothing", took, 4*lifetime)
	}
	if got := labtest.SHA256File(t, readCopy); got != rsum {
		t.Errorf("read through the mount: sha256 %s, want %s", got, rsum)
	}
	// Read back what was written, through the mount (with a token issued
	// long after the mount) and directly from Swift.
	if got := labtest.SHA256File(t, d.Path("new.img")); got != wsum {
		t.Errorf("written file read through the mount: sha256 %s, want %s", got, wsum)
	}
	in, err := m.store.Head(t.Context(), c, "new.img")
	if err != nil || in.Meta["sha256"] != wsum {
		t.Errorf("written file in Swift: %+v %v, want sha256 %s", in, err, wsum)
	}
	if m.check != nil {
		m.check(t)
	}
	d.Stop()
	st := d.KeeperStats()
	t.Logf("%s: %v for %d MiB in and out; keeper: %+v", m.name, took.Round(time.Second), size>>20, st)
	if st.Renewals < 4 {
		t.Errorf("%d renewals in %v, want at least 4", st.Renewals, took)
	}
	if st.Swift401 != 0 || st.Failures != 0 {
		t.Errorf("Swift answered 401 %d times, %d renewals failed: the keeper renews too late", st.Swift401, st.Failures)
	}
	log := d.LogText()
	if strings.Contains(log, "HTTP 401") || strings.Contains(log, "level=ERROR") {
		t.Errorf("the daemon logged a 401 or an error")
	}
	if m.name == "application-credential" && !strings.Contains(log, "application credential expires soon") {
		t.Error("no warning about the application credential's expiry")
	}
	d.CheckNoSecrets(m.secrets...)
}

// TestServiceTokenIsolation: on the IMAGE_ account, the user's token alone
// is refused by Swift (so the user cannot touch the images behind the
// service's back), the service token makes it work, and a service-token
// mount stores its files there, not in the user's AUTH_ account. After the
// user token has expired, the mount keeps working.
func TestServiceTokenIsolation(t *testing.T) {
	t.Parallel()
	img := labtest.ImageStore(t)
	c := labtest.NewContainerIn(t, img)
	userTok := labtest.UserToken(t)
	tokenAt := time.Now()
	env := append(labtest.ServiceUserEnv(), "OS_TOKEN="+string(userTok), "OS_USERNAME=", "OS_PASSWORD=")
	d := labtest.Mount(t, c, labtest.MountOpts{Env: env})
	if err := os.WriteFile(d.Path("vm.img"), []byte("image data"), 0o644); err != nil {
		t.Fatal(err)
	}
	authURL := labtest.Keeper.Current().StorageURL // .../AUTH_<demo>
	imageURL := strings.Replace(authURL, "/AUTH_", "/IMAGE_", 1)
	get := func(url string, headers ...string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	obj := "/" + c + "/vm.img"
	if code := get(imageURL+obj, "X-Auth-Token", string(userTok)); code != http.StatusForbidden && code != http.StatusUnauthorized {
		t.Errorf("user token alone on IMAGE_: HTTP %d, want 403", code)
	}
	if code := get(authURL+obj, "X-Auth-Token", string(userTok)); code != http.StatusNotFound {
		t.Errorf("the file is in (or the container is visible in) the user's AUTH_ account: HTTP %d", code)
	}
	if in, err := img.Head(t.Context(), c, "vm.img"); err != nil || in.Size != 10 {
		t.Errorf("file in IMAGE_: %+v %v", in, err)
	}

	// After the user token's expiry: the token alone is refused even on
	// AUTH_, the mount still reads and writes.
	time.Sleep(time.Until(tokenAt.Add(labtest.TokenLifetime(t) + 5*time.Second)))
	if code := get(authURL, "X-Auth-Token", string(userTok)); code != http.StatusUnauthorized {
		t.Fatalf("the user token still works alone after its lifetime: HTTP %d", code)
	}
	if b, err := os.ReadFile(d.Path("vm.img")); err != nil || string(b) != "image data" {
		t.Errorf("read after the user token expired: %q %v", b, err)
	}
	if err := os.WriteFile(d.Path("after.img"), []byte(fmt.Sprint(time.Now())), 0o644); err != nil {
		t.Errorf("write after the user token expired: %v", err)
	}
	if _, err := img.Head(t.Context(), c, "after.img"); err != nil {
		t.Errorf("file written after the user token expired: %v", err)
	}
	d.Stop()
	if st := d.KeeperStats(); st.Swift401 != 0 {
		t.Errorf("Swift answered 401 %d times", st.Swift401)
	}
	d.CheckNoSecrets(string(userTok))
}

// TestMountWithCloudsYAML: the credentials come from clouds.yaml
// (OS_CLOUD, OS_CLIENT_CONFIG_FILE), as with the OpenStack tools.
func TestMountWithCloudsYAML(t *testing.T) {
	c := labtest.NewContainer(t)
	dir := t.TempDir()
	yaml := fmt.Sprintf(`clouds:
  lab:
    auth:
      auth_url: %s
      username: %s
      user_domain_name: Default
      project_name: %s
      project_domain_name: Default
    region_name: %s
`, os.Getenv("OS_AUTH_URL"), os.Getenv("OS_USERNAME"), os.Getenv("OS_PROJECT_NAME"), os.Getenv("OS_REGION_NAME"))
	if err := os.WriteFile(filepath.Join(dir, "clouds.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	secure := fmt.Sprintf("clouds:\n  lab:\n    auth:\n      password: %s\n", os.Getenv("OS_PASSWORD"))
	if err := os.WriteFile(filepath.Join(dir, "secure.yaml"), []byte(secure), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"OS_CLOUD=lab", "OS_CLIENT_CONFIG_FILE=" + filepath.Join(dir, "clouds.yaml"), "OS_AUTH_URL=", "OS_USERNAME=",
		"OS_PASSWORD=", "OS_USER_DOMAIN_NAME=", "OS_PROJECT_NAME=", "OS_PROJECT_DOMAIN_NAME=", "OS_REGION_NAME="}
	d := labtest.Mount(t, c, labtest.MountOpts{Env: env})
	if err := os.WriteFile(d.Path("f.img"), []byte("from clouds.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	if in, err := labtest.Swift.Head(t.Context(), c, "f.img"); err != nil || in.Size != 16 {
		t.Errorf("written through a clouds.yaml mount: %+v %v", in, err)
	}
	d.Stop()
	d.CheckNoSecrets(os.Getenv("OS_PASSWORD"))
}

// TestApplicationCredentialExpiresWhileMounted: Keystone caps the tokens
// of an application credential at its expiry. The keeper knows the
// deadline, does not renew the capped token in a loop, and after the
// expiry the mount refuses access (EACCES) with a clear error in the log
// instead of hanging or returning EIO.
func TestApplicationCredentialExpiresWhileMounted(t *testing.T) {
	t.Parallel()
	ttl := labtest.TokenLifetime(t) + 30*time.Second
	acID, acSecret := labtest.NewAppCredential(t, ttl)
	created := time.Now()
	c := labtest.NewContainer(t)
	labtest.PutObject(t, c, "old.img", []byte("before"), nil)
	env := []string{"OS_APPLICATION_CREDENTIAL_ID=" + acID, "OS_APPLICATION_CREDENTIAL_SECRET=" + string(acSecret)}
	d := labtest.Mount(t, c, labtest.MountOpts{Env: env, Args: []string{"--retry-budget", "5s"}})
	if !strings.Contains(d.LogText(), "application credential expires soon") {
		t.Error("no warning at mount time about a credential expiring in minutes")
	}
	if err := os.WriteFile(d.Path("during.img"), []byte("ok"), 0o644); err != nil {
		t.Fatalf("write while the credential is valid: %v", err)
	}
	time.Sleep(time.Until(created.Add(ttl + 10*time.Second)))
	err := os.WriteFile(d.Path("after.img"), []byte("no"), 0o644)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("write after the credential expired: %v, want permission denied", err)
	}
	if _, err := labtest.Swift.Head(t.Context(), c, "after.img"); err == nil {
		t.Error("a file was stored with an expired credential")
	}
	d.Stop()
	log := d.LogText()
	if !strings.Contains(log, "credentials expired") {
		t.Error("the log does not say the credentials expired")
	}
	if n := strings.Count(log, "keystone token renewed"); n > 3 {
		t.Errorf("%d renewals in %v: the capped token was renewed in a loop", n, ttl)
	}
	d.CheckNoSecrets(string(acSecret))
}

// TestServiceTokenRemoveAndOverwrite: on the IMAGE_ account Swift's bulk
// delete refuses the sub-requests (they lose the service token), so rm and
// overwrite must still delete the segments, one by one.
func TestServiceTokenRemoveAndOverwrite(t *testing.T) {
	t.Parallel()
	img := labtest.ImageStore(t)
	c := labtest.NewContainerIn(t, img)
	env := append(labtest.ServiceUserEnv(), "OS_TOKEN="+string(labtest.UserToken(t)), "OS_USERNAME=", "OS_PASSWORD=")
	d := labtest.Mount(t, c, labtest.MountOpts{Env: env, Args: []string{"--segment-size", "1MiB"}})
	segs := func() []string {
		var names []string
		err := img.List(t.Context(), c+"_segments", "", 0, func(in segments.Info) error {
			if !strings.HasPrefix(in.Name, labtest.StatePrefix) {
				names = append(names, in.Name)
			}
			return nil
		})
		if err != nil && !errors.Is(err, segments.ErrNotFound) {
			t.Fatal(err)
		}
		return names
	}
	src, sum := labtest.RandomFile(t, 3<<20+1, 41)
	labtest.RunCmd(t, "cp", src, d.Path("a.img"))
	first := segs()
	if len(first) < 4 {
		t.Fatalf("segments after cp: %v", first)
	}
	src2, sum2 := labtest.RandomFile(t, 2<<20+1, 42)
	labtest.RunCmd(t, "cp", src2, d.Path("a.img")) // overwrite: the first version's segments go
	if got := labtest.SHA256File(t, d.Path("a.img")); got != sum2 || got == sum {
		t.Fatalf("content after overwrite differs")
	}
	// The replaced version is reaped after the grace period (2 s here).
	waitFor(t, 30*time.Second, "the replaced version's segments to be reaped", func() bool {
		for _, n := range segs() {
			if slices.Contains(first, n) {
				return false
			}
		}
		return true
	})
	labtest.RunCmd(t, "rm", d.Path("a.img"))
	waitFor(t, 30*time.Second, "the segments to be reaped after rm", func() bool { return len(segs()) == 0 })
	if strings.Contains(d.LogText(), "level=ERROR") {
		t.Errorf("errors in the log:\n%s", d.LogText())
	}
}

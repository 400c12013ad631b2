//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// authForm is one way of writing credentials, as an operator's openrc or
// clouds.yaml for openstackclient would have it.
type authForm struct {
	name    string
	env     []string             // over the lab's (demo) environment; "NAME=" unsets
	svcEnv  []string             // added for imagefs only (the service user of service-token mode)
	store   segments.ObjectStore // the account the mount lands in
	secrets []string             // never in imagefs' output
	// userToken: OS_TOKEN is a demo token issued when the subtest starts
	// (also a secret).
	userToken bool
}

// openstack runs `openstack token issue` with env over the test's
// environment and returns its combined output and whether it succeeded.
func openstack(t *testing.T, env []string) (string, bool) {
	t.Helper()
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("openstack (python3-openstackclient, in test/run.sh's packages) is not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openstack", "token", "issue", "-f", "value", "-c", "project_id", "-c", "user_id")
	// exec keeps the last of duplicate names: env wins; an empty value
	// is unset for openstackclient (and for imagefs).
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("openstack token issue did not finish within a minute: %s", out)
	}
	return string(out), err == nil
}

// TestAuthConventions: each form openstackclient accepts for a mode
// (keystoneauth's auth types and variables, clouds.yaml), `openstack token
// issue` accepts and imagefs mounts with, and a file written through the
// mount lands in the right account; forms openstackclient refuses, imagefs
// refuses with a clear error (and the one form imagefs refuses on purpose
// says why).
func TestAuthConventions(t *testing.T) {
	t.Parallel()
	trust := labtest.NewTrust(t)
	acID, acSecret := labtest.NewAppCredential(t, 3*time.Hour)
	svc := labtest.ServiceUser()
	svcPW := string(svc.Password)
	demoPW := os.Getenv("OS_PASSWORD")
	img := labtest.ImageStore(t)
	// The trustee as keystoneauth takes it: the OS_* user, no project.
	trustee := []string{"OS_USERNAME=" + svc.Username, "OS_PASSWORD=" + svcPW, "OS_USER_DOMAIN_NAME=Default",
		"OS_TRUST_ID=" + trust, "OS_PROJECT_NAME="}
	// A plain token: no user credentials (openstackclient's token plugins
	// refuse a user domain), the project to scope to kept. The token is
	// issued in the subtest (userToken): a parallel subtest may wait for a
	// slot longer than the lab's token lifetime.
	token := []string{"OS_USERNAME=", "OS_PASSWORD=", "OS_USER_DOMAIN_NAME="}

	dir := t.TempDir()
	clouds := filepath.Join(dir, "clouds.yaml")
	yaml := fmt.Sprintf(`clouds:
  lab-trust:
    auth_type: password
    auth:
      auth_url: %s
      username: %s
      password: %s
      user_domain_name: Default
      trust_id: %s
    region_name: %s
`, os.Getenv("OS_AUTH_URL"), svc.Username, svcPW, trust, os.Getenv("OS_REGION_NAME"))
	if err := os.WriteFile(clouds, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	noOS := []string{"OS_AUTH_URL=", "OS_USERNAME=", "OS_PASSWORD=", "OS_USER_DOMAIN_NAME=", "OS_PROJECT_NAME=", "OS_PROJECT_DOMAIN_NAME=", "OS_REGION_NAME="}

	forms := []authForm{
		{name: "password", env: []string{"OS_AUTH_TYPE=password"}, store: labtest.Swift, secrets: []string{demoPW}},
		{name: "v3password", env: []string{"OS_AUTH_TYPE=v3password"}, store: labtest.Swift, secrets: []string{demoPW}},
		// openstackclient's --os-default-domain: no domains at all.
		{name: "password-no-domains", env: []string{"OS_AUTH_TYPE=password", "OS_USER_DOMAIN_NAME=", "OS_PROJECT_DOMAIN_NAME="}, store: labtest.Swift, secrets: []string{demoPW}},
		{name: "trust-password", env: append([]string{"OS_AUTH_TYPE=password"}, trustee...), store: labtest.Swift, secrets: []string{svcPW}},
		{name: "trust-no-domain", env: append(append([]string{}, trustee...), "OS_USER_DOMAIN_NAME=", "OS_PROJECT_DOMAIN_NAME="), store: labtest.Swift, secrets: []string{svcPW}},
		{name: "trust-v3password", env: append([]string{"OS_AUTH_TYPE=v3password"}, trustee...), store: labtest.Swift, secrets: []string{svcPW}},
		{name: "trust-clouds.yaml", env: append([]string{"OS_CLOUD=lab-trust", "OS_CLIENT_CONFIG_FILE=" + clouds}, noOS...), store: labtest.Swift, secrets: []string{svcPW}},
		{name: "v3applicationcredential", env: []string{"OS_AUTH_TYPE=v3applicationcredential", "OS_APPLICATION_CREDENTIAL_ID=" + acID,
			"OS_APPLICATION_CREDENTIAL_SECRET=" + string(acSecret), "OS_USERNAME=", "OS_PASSWORD=", "OS_PROJECT_NAME=", "OS_PROJECT_DOMAIN_NAME="},
			store: labtest.Swift, secrets: []string{string(acSecret)}},
		{name: "v3token", env: append([]string{"OS_AUTH_TYPE=v3token"}, token...), svcEnv: labtest.ServiceUserEnv(), store: img, secrets: []string{svcPW}, userToken: true},
		{name: "token", env: append([]string{"OS_AUTH_TYPE=token"}, token...), svcEnv: labtest.ServiceUserEnv(), store: img, secrets: []string{svcPW}, userToken: true},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			if f.userToken {
				tok := string(labtest.UserToken(t))
				f.env = append(append([]string{}, f.env...), "OS_TOKEN="+tok)
				f.secrets = append(append([]string{}, f.secrets...), tok)
			}
			if out, ok := openstack(t, f.env); !ok {
				t.Fatalf("openstack token issue refuses the form: %s", out)
			}
			c := labtest.NewContainerIn(t, f.store)
			d := labtest.Mount(t, c, labtest.MountOpts{Env: append(append([]string{}, f.env...), f.svcEnv...)})
			data := []byte("written with " + f.name)
			if err := os.WriteFile(d.Path("f.img"), data, 0o644); err != nil {
				t.Fatalf("write through the mount: %v", err)
			}
			if in, err := f.store.Head(t.Context(), c, "f.img"); err != nil || in.Size != int64(len(data)) {
				t.Errorf("the file in Swift: %+v %v", in, err)
			}
			if b, err := os.ReadFile(d.Path("f.img")); err != nil || !bytes.Equal(b, data) {
				t.Errorf("read back: %q %v", b, err)
			}
			d.Stop()
			d.CheckNoSecrets(f.secrets...)
		})
	}

	// Refused by both: a trust and a project (two scopes), an auth type
	// keystoneauth has no plugin for.
	for _, r := range []struct {
		name, osc, imagefs string
		env                []string
	}{
		{"trust-and-project", "cannot be scoped to multiple targets", "OS_TRUST_ID and a project",
			append(append([]string{"OS_AUTH_TYPE=password"}, trustee...), "OS_PROJECT_NAME="+os.Getenv("OS_PROJECT_NAME"))},
		{"unknown-auth-type", "could not be found", `auth type "v3passwd" is not supported`, []string{"OS_AUTH_TYPE=v3passwd"}},
	} {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			out, ok := openstack(t, r.env)
			if ok || !strings.Contains(out, r.osc) {
				t.Errorf("openstack token issue: succeeded %v, output %q, want a refusal saying %q", ok, out, r.osc)
			}
			stderr := labtest.MountFails(t, r.env, []string{"anything", t.TempDir()}, 1, r.imagefs)
			for _, s := range []string{svcPW, demoPW} {
				if strings.Contains(stderr, s) {
					t.Error("imagefs' error shows a password")
				}
			}
		})
	}

	// Accepted by openstackclient, refused by imagefs on purpose: a plain
	// token without a service user cannot be renewed, so such a mount would
	// fail when the token expires.
	t.Run("token-without-service-user", func(t *testing.T) {
		userTok := string(labtest.UserToken(t))
		env := append(append([]string{"OS_AUTH_TYPE=v3token"}, token...), "OS_TOKEN="+userTok)
		if out, ok := openstack(t, env); !ok {
			t.Fatalf("openstack token issue refuses a plain token: %s", out)
		}
		stderr := labtest.MountFails(t, env, []string{"anything", t.TempDir()}, 1, "a user token cannot be renewed, and a mount would fail when it expires")
		if strings.Contains(stderr, userTok) {
			t.Error("imagefs' error shows the token")
		}
	})
}

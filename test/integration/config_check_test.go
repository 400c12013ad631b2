//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// checkRun runs `imagefs config check args...` with env over the test's
// environment.
func checkRun(t *testing.T, env []string, args ...string) labtest.Result {
	t.Helper()
	cmd := exec.Command(labtest.Binary, append([]string{"config", "check"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := labtest.Result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestConfigCheck: `imagefs config check` prints each setting with its
// source (flag, environment variable, secret file, clouds.yaml, default),
// secrets only as "set", then the token's mode, user, project and expiry,
// the account and the container, and /info; it exits 1 with mount's
// errors for a wrong password or a missing container. No secret and no
// token shows in its output.
func TestConfigCheck(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	pw := os.Getenv("OS_PASSWORD")
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noSecrets := func(t *testing.T, r labtest.Result, secrets ...string) {
		t.Helper()
		all := r.Stdout + r.Stderr
		for _, s := range append(secrets, pw) {
			if s != "" && strings.Contains(all, s) {
				t.Errorf("the output shows a secret (%d characters)", len(s))
			}
		}
		if strings.Contains(all, "gAAAAA") {
			t.Error("the output shows a token")
		}
		for _, bad := range []string{"goroutine ", "panic", ".go:"} {
			if strings.Contains(r.Stderr, bad) {
				t.Errorf("stderr has %q: %s", bad, r.Stderr)
			}
		}
	}
	row := func(t *testing.T, out, setting, value, from string) {
		t.Helper()
		re := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(setting) + `\s+` + regexp.QuoteMeta(value) + `\s+` + regexp.QuoteMeta(from) + `\s*$`)
		if !re.MatchString(out) {
			t.Errorf("no row %q %q %q in:\n%s", setting, value, from, out)
		}
	}

	t.Run("ok", func(t *testing.T) {
		r := checkRun(t, []string{"OS_PASSWORD="}, "--os-password-file", pwFile, "--segment-size", "16MiB", c)
		if r.Code != 0 {
			t.Fatalf("exit %d: %s\n%s", r.Code, r.Stderr, r.Stdout)
		}
		row(t, r.Stdout, "os-auth-url", os.Getenv("OS_AUTH_URL"), "environment OS_AUTH_URL")
		row(t, r.Stdout, "os-password", "set", "file "+pwFile+" (flag --os-password-file)")
		row(t, r.Stdout, "segment-size", "16MiB", "flag --segment-size")
		row(t, r.Stdout, "upload-workers", "4", "default")
		for _, want := range []string{"Keystone: ok: mode password, user demo (", "project demo (", "token expires in ",
			"account: ok: ", fmt.Sprintf("container %q: ok", c), "/info: slo yes, max_manifest_segments 1000", "configuration: ok"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("the report does not say %q:\n%s", want, r.Stdout)
			}
		}
		noSecrets(t, r)
	})

	t.Run("systemd-credential", func(t *testing.T) {
		creds := t.TempDir()
		if err := os.WriteFile(filepath.Join(creds, "os-password"), []byte(pw), 0o600); err != nil {
			t.Fatal(err)
		}
		r := checkRun(t, []string{"OS_PASSWORD=", "CREDENTIALS_DIRECTORY=" + creds})
		if r.Code != 0 {
			t.Fatalf("exit %d: %s\n%s", r.Code, r.Stderr, r.Stdout)
		}
		row(t, r.Stdout, "os-password", "set", "systemd credential os-password ("+filepath.Join(creds, "os-password")+")")
		noSecrets(t, r)
	})

	t.Run("clouds.yaml", func(t *testing.T) {
		clouds := filepath.Join(dir, "clouds.yaml")
		yaml := fmt.Sprintf("clouds:\n  lab:\n    auth:\n      auth_url: %s\n      username: demo\n      user_domain_name: Default\n      project_name: demo\n      project_domain_name: Default\n",
			os.Getenv("OS_AUTH_URL"))
		secure := fmt.Sprintf("clouds:\n  lab:\n    auth:\n      password: %s\n", pw)
		if err := os.WriteFile(clouds, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "secure.yaml"), []byte(secure), 0o600); err != nil {
			t.Fatal(err)
		}
		env := []string{"OS_CLOUD=lab", "OS_CLIENT_CONFIG_FILE=" + clouds, "OS_AUTH_URL=", "OS_USERNAME=", "OS_PASSWORD=", "OS_PROJECT_NAME="}
		r := checkRun(t, env, c)
		if r.Code != 0 {
			t.Fatalf("exit %d: %s\n%s", r.Code, r.Stderr, r.Stdout)
		}
		from := fmt.Sprintf(`clouds.yaml %s (or %s), cloud "lab"`, clouds, filepath.Join(dir, "secure.yaml"))
		row(t, r.Stdout, "os-username", "demo", from)
		row(t, r.Stdout, "os-password", "set", from)
		row(t, r.Stdout, "os-cloud", "lab", "environment OS_CLOUD")
		noSecrets(t, r)
	})

	t.Run("wrong-password", func(t *testing.T) {
		bad := "not-the-password-" + fmt.Sprint(os.Getpid())
		r := checkRun(t, []string{"OS_PASSWORD=" + bad}, c)
		if r.Code != 1 || !strings.Contains(r.Stderr, "check the user name, password") || !strings.Contains(r.Stdout, "Keystone: NOT OK") {
			t.Errorf("exit %d, stderr %q", r.Code, r.Stderr)
		}
		row(t, r.Stdout, "os-password", "set", "environment OS_PASSWORD")
		noSecrets(t, r, bad)
	})

	t.Run("missing-container", func(t *testing.T) {
		r := checkRun(t, nil, c+"-not-there")
		if r.Code != 1 || !strings.Contains(r.Stderr, "does not exist") {
			t.Errorf("exit %d, stderr %q", r.Code, r.Stderr)
		}
		noSecrets(t, r)
	})

	t.Run("bad-settings", func(t *testing.T) {
		r := checkRun(t, []string{"OS_PROJECT_NAME=", "OS_TRUST_ID=0123"}, "--segment-size", "1KiB")
		if r.Code != 1 || !strings.Contains(r.Stderr, "segment-size") || !strings.Contains(r.Stdout, "configuration: NOT OK") {
			t.Errorf("exit %d, stderr %q\n%s", r.Code, r.Stderr, r.Stdout)
		}
		row(t, r.Stdout, "os-trust-id", "0123", "environment OS_TRUST_ID")
		noSecrets(t, r)
	})
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/auth"
)

// secretNames are the five secrets: flag (and credential) and variable.
var secretNames = []struct{ flag, env string }{
	{"os-password", "OS_PASSWORD"},
	{"os-application-credential-secret", "OS_APPLICATION_CREDENTIAL_SECRET"},
	{"os-token", "OS_TOKEN"},
	{"service-password", "IMAGEFS_SERVICE_PASSWORD"},
	{"service-application-credential-secret", "IMAGEFS_SERVICE_APPLICATION_CREDENTIAL_SECRET"},
}

// secretOf is where the secret of a flag lands.
func secretOf(c *Config, flag string) auth.Secret {
	return map[string]auth.Secret{
		"os-password":                           c.Auth.Password,
		"os-application-credential-secret":      c.Auth.ApplicationCredentialSecret,
		"os-token":                              c.Auth.Token,
		"service-password":                      c.Auth.Service.Password,
		"service-application-credential-secret": c.Auth.Service.ApplicationCredentialSecret,
	}[flag]
}

// cleanSecretEnv unsets what could give a secret from the test's
// environment (the lab's OS_* variables, a systemd credential directory).
func cleanSecretEnv(t *testing.T) {
	t.Helper()
	for _, s := range secretNames {
		t.Setenv(s.env, "")
		t.Setenv(s.env+"_FILE", "")
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	t.Setenv("OS_CLOUD", "")
	t.Setenv("IMAGEFS_SERVICE_CLOUD", "")
}

// parseAuth parses args with authFlags and resolves them, as the commands
// do before they connect.
func parseAuth(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	var c Config
	app := &cli.App{Name: "imagefs", Flags: authFlags(&c), ExitErrHandler: func(*cli.Context, error) {},
		Action: func(*cli.Context) error { return c.resolveAuth() }}
	return &c, app.Run(append([]string{"imagefs"}, args...))
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecretFiles: each secret can come from --NAME-file or NAME_FILE; the
// file's trailing newline (or CRLF) is stripped, nothing else.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	for _, s := range secretNames {
		for _, tc := range []struct{ content, want string }{
			{"s3cret-" + s.flag, "s3cret-" + s.flag},
			{"s3cret\n", "s3cret"},
			{"s3cret\r\n", "s3cret"},
			{" spaced out \n", " spaced out "},
		} {
			p := writeFile(t, dir, "secret", tc.content, 0o600)
			t.Run(s.flag+"/flag", func(t *testing.T) {
				cleanSecretEnv(t)
				c, err := parseAuth(t, "--"+s.flag+"-file", p)
				if err != nil || string(secretOf(c, s.flag)) != tc.want {
					t.Errorf("%q: got %q, %v", tc.content, secretOf(c, s.flag), err)
				}
			})
			t.Run(s.flag+"/variable", func(t *testing.T) {
				cleanSecretEnv(t)
				t.Setenv(s.env+"_FILE", p)
				c, err := parseAuth(t)
				if err != nil || string(secretOf(c, s.flag)) != tc.want {
					t.Errorf("%q: got %q, %v", tc.content, secretOf(c, s.flag), err)
				}
			})
		}
	}
}

// TestSecretFileErrors: a secret given twice, or a file that cannot give
// one, is an error naming the flag, its variable and the path, never the
// content.
func TestSecretFileErrors(t *testing.T) {
	dir := t.TempDir()
	const secret = "do-not-show-me"
	good := writeFile(t, dir, "good", secret+"\n", 0o600)
	big := writeFile(t, dir, "big", strings.Repeat("x", maxSecretSize+1), 0o600)
	for _, s := range secretNames {
		ff := "--" + s.flag + "-file"
		for _, tc := range []struct {
			name string
			env  []string // NAME=value pairs
			args []string
			want string
		}{
			{"flag and file", nil, []string{"--" + s.flag, secret, ff, good},
				"is given twice: --" + s.flag + " (" + s.env + ") and " + ff + " (" + s.env + "_FILE) are both set; keep only the file"},
			{"variable and file", []string{s.env, secret}, []string{ff, good}, "is given twice"},
			{"variable and file variable", []string{s.env, secret, s.env + "_FILE", good}, nil, "is given twice"},
			{"missing file", nil, []string{ff, filepath.Join(dir, "nope")},
				ff + " (" + s.env + "_FILE) " + filepath.Join(dir, "nope") + ": no such file or directory"},
			{"missing file, by variable", []string{s.env + "_FILE", filepath.Join(dir, "nope")}, nil,
				ff + " (" + s.env + "_FILE) " + filepath.Join(dir, "nope") + ": no such file or directory"},
			{"empty file", nil, []string{ff, writeFile(t, dir, "empty", "", 0o600)}, "/empty: is empty"},
			{"only a newline", nil, []string{ff, writeFile(t, dir, "newline", "\n", 0o600)}, "/newline: is empty"},
			{"two lines", nil, []string{ff, writeFile(t, dir, "two", secret+"\n"+secret+"\n", 0o600)}, "/two: has more than one line"},
			{"a directory", nil, []string{ff, dir}, dir + ": is a directory"},
			{"too large", nil, []string{ff, big}, "/big: larger than 64KiB: not a secret file"},
		} {
			t.Run(s.flag+"/"+tc.name, func(t *testing.T) {
				cleanSecretEnv(t)
				for i := 0; i+1 < len(tc.env); i += 2 {
					t.Setenv(tc.env[i], tc.env[i+1])
				}
				_, err := parseAuth(t, tc.args...)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want %q", err, tc.want)
				}
				if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "\n") {
					t.Errorf("error %q: shows the secret or has several lines", err)
				}
			})
		}
	}
}

// TestSecretFileUnreadable: a file the daemon may not read names the path.
func TestSecretFileUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	cleanSecretEnv(t)
	p := writeFile(t, t.TempDir(), "locked", "s3cret", 0o000)
	if _, err := parseAuth(t, "--os-password-file", p); err == nil || !strings.Contains(err.Error(), p+": permission denied") {
		t.Errorf("error %v", err)
	}
}

// useCredentials points $CREDENTIALS_DIRECTORY at a new directory holding
// these credentials (name: content) and returns it.
func useCredentials(t *testing.T, creds map[string]string) string {
	t.Helper()
	cleanSecretEnv(t)
	dir := t.TempDir()
	for name, content := range creds {
		writeFile(t, dir, name, content, 0o400)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	return dir
}

// TestSystemdCredentials: with $CREDENTIALS_DIRECTORY, each secret that no
// flag, variable or file gives comes from the credential of the flag's
// name, before clouds.yaml; a credential that is not there is no error, an
// empty one is.
func TestSystemdCredentials(t *testing.T) {
	all := map[string]string{}
	for _, s := range secretNames {
		all[s.flag] = "cred-" + s.flag + "\n"
	}
	t.Run("all five", func(t *testing.T) {
		useCredentials(t, all)
		c, err := parseAuth(t)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secretNames {
			if got := string(secretOf(c, s.flag)); got != "cred-"+s.flag {
				t.Errorf("%s: %q", s.flag, got)
			}
		}
	})
	t.Run("flags, variables and files first", func(t *testing.T) {
		useCredentials(t, all)
		t.Setenv("OS_TOKEN", "from-variable")
		file := writeFile(t, t.TempDir(), "pw", "from-file\n", 0o600)
		c, err := parseAuth(t, "--service-password", "from-flag", "--os-password-file", file)
		if err != nil {
			t.Fatal(err)
		}
		if c.Auth.Token != "from-variable" || c.Auth.Service.Password != "from-flag" || c.Auth.Password != "from-file" ||
			c.Auth.ApplicationCredentialSecret != "cred-os-application-credential-secret" {
			t.Errorf("got %q %q %q %q", c.Auth.Token, c.Auth.Service.Password, c.Auth.Password, c.Auth.ApplicationCredentialSecret)
		}
	})
	t.Run("some missing", func(t *testing.T) {
		useCredentials(t, map[string]string{"os-password": "cred-pw"})
		c, err := parseAuth(t)
		if err != nil || c.Auth.Password != "cred-pw" || c.Auth.Token != "" || c.Auth.Service.Password != "" {
			t.Errorf("%v: %q %q %q", err, c.Auth.Password, c.Auth.Token, c.Auth.Service.Password)
		}
	})
	t.Run("over clouds.yaml", func(t *testing.T) {
		useCredentials(t, map[string]string{"os-password": "cred-pw\n"})
		dir := t.TempDir()
		writeFile(t, dir, "clouds.yaml", "clouds:\n  images:\n    auth:\n      auth_url: https://keystone.example/v3\n      username: u\n      password: from-clouds\n", 0o600)
		t.Setenv("OS_CLIENT_CONFIG_FILE", filepath.Join(dir, "clouds.yaml"))
		c, err := parseAuth(t, "--os-cloud", "images")
		if err != nil || c.Auth.Password != "cred-pw" || c.Auth.Username != "u" {
			t.Errorf("%v: %q %q", err, c.Auth.Password, c.Auth.Username)
		}
	})
	t.Run("empty credential", func(t *testing.T) {
		bad := useCredentials(t, map[string]string{"service-password": "", "os-token": "a\nb\n"})
		_, err := parseAuth(t)
		for _, want := range []string{
			"systemd credential service-password (" + filepath.Join(bad, "service-password") + "): is empty",
			"systemd credential os-token (" + filepath.Join(bad, "os-token") + "): has more than one line",
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want %q", err, want)
			}
		}
	})
}

// TestSecretFilesInEveryCommand: mount, gc and trust take the file flags,
// and a bad file stops them before they do anything, with exit status 1.
func TestSecretFilesInEveryCommand(t *testing.T) {
	cleanSecretEnv(t)
	missing := filepath.Join(t.TempDir(), "nope")
	for _, args := range [][]string{
		{"mount", "--os-password-file", missing, "c", t.TempDir()},
		{"gc", "--service-password-file", missing, "c"},
		{"trust", "create", "--os-token-file", missing},
		{"trust", "delete", "--os-application-credential-secret-file", missing, "id"},
	} {
		err := newApp().Run(append([]string{"imagefs"}, args...))
		if err == nil || !strings.Contains(err.Error(), missing+": no such file or directory") {
			t.Errorf("%v: %v", args, err)
			continue
		}
		if code := reportTo(err); code != 1 {
			t.Errorf("%v: exit status %d", args, code)
		}
	}
}

// reportTo is report with stderr thrown away.
func reportTo(err error) int {
	stderr := os.Stderr
	os.Stderr, _ = os.Open(os.DevNull)
	defer func() { os.Stderr.Close(); os.Stderr = stderr }()
	return report(err)
}

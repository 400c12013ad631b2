//go:build integration

package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// withoutSecret is the environment entries that blank every variable of
// the test's environment whose value holds secret (OS_PASSWORD and any
// copy), so that only a file can give it to the daemon.
func withoutSecret(secret string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.Contains(v, secret) {
			env = append(env, k+"=")
		}
	}
	return env
}

// writeSecret writes secret and a newline to name in dir, mode 0600.
func writeSecret(t *testing.T, dir, name, secret string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecretsFromFiles: the password given only as a file
// (--os-password-file) or only as a systemd credential
// ($CREDENTIALS_DIRECTORY/os-password) mounts; a file copied in reads
// back; neither the password nor a token shows in the daemon's command
// line, environment or log. gc takes the file too.
func TestSecretsFromFiles(t *testing.T) {
	t.Parallel()
	pw := os.Getenv("OS_PASSWORD")
	env := withoutSecret(pw)
	pwFile := writeSecret(t, t.TempDir(), "images.password", pw)
	creds := t.TempDir()
	writeSecret(t, creds, "os-password", pw)

	for _, tc := range []struct {
		name string
		args []string
		env  []string
	}{
		{"file", []string{"--os-password-file", pwFile}, env},
		{"systemd credential", nil, append(env, "CREDENTIALS_DIRECTORY="+creds)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := labtest.NewContainer(t)
			d := labtest.Mount(t, c, labtest.MountOpts{Args: tc.args, Env: tc.env})
			src, sum := labtest.RandomFile(t, 3<<20, 9)
			labtest.RunCmd(t, "cp", src, d.Path("small.img"))
			if got := labtest.SHA256File(t, d.Path("small.img")); got != sum {
				t.Errorf("read back: sha256 %s, want %s", got, sum)
			}
			for _, f := range []string{"cmdline", "environ"} {
				b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(d.Cmd.Process.Pid), f))
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(b, []byte(pw)) {
					t.Errorf("/proc/<daemon>/%s shows the password", f)
				}
				if bytes.Contains(b, []byte("gAAAAA")) {
					t.Errorf("/proc/<daemon>/%s shows a token", f)
				}
			}
			d.Stop()
			d.CheckNoSecrets(pw)
		})
	}

	t.Run("gc", func(t *testing.T) {
		c := labtest.NewContainer(t)
		cmd := exec.Command(labtest.Binary, "gc", "--os-password-file", pwFile, c)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "container "+c+": 0 objects") {
			t.Errorf("imagefs gc: %v\n%s", err, out)
		}
		if bytes.Contains(out, []byte(pw)) {
			t.Error("gc's output shows the password")
		}
	})
}

// TestSecretsBadInput: a secret file that cannot be read, or a secret
// given both directly and as a file, fails before mounting, in one line
// naming the flag and the path, exit status 1, no stack trace.
func TestSecretsBadInput(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	pw := os.Getenv("OS_PASSWORD")
	env := withoutSecret(pw)
	files := t.TempDir()
	pwFile := writeSecret(t, files, "images.password", pw)
	empty := filepath.Join(files, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(files, "missing.password")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"missing file", env, []string{"--os-password-file", missing},
			"imagefs: --os-password-file (OS_PASSWORD_FILE) " + missing + ": no such file or directory"},
		{"missing file, by variable", append(env, "OS_PASSWORD_FILE="+missing), nil,
			"imagefs: --os-password-file (OS_PASSWORD_FILE) " + missing + ": no such file or directory"},
		{"empty file", env, []string{"--os-password-file", empty},
			"imagefs: --os-password-file (OS_PASSWORD_FILE) " + empty + ": is empty"},
		{"a directory", env, []string{"--os-password-file", files},
			"imagefs: --os-password-file (OS_PASSWORD_FILE) " + files + ": is a directory"},
		{"password and its file", nil, []string{"--os-password-file", pwFile},
			"imagefs: the password is given twice: --os-password (OS_PASSWORD) and --os-password-file (OS_PASSWORD_FILE) are both set; keep only the file"},
		{"service password file missing", append(append(env, labtest.ServiceUserEnv()...), "IMAGEFS_SERVICE_PASSWORD=",
			"IMAGEFS_SERVICE_PASSWORD_FILE="+missing), nil,
			"imagefs: --service-password-file (IMAGEFS_SERVICE_PASSWORD_FILE) " + missing + ": no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := labtest.MountFails(t, tc.env, append(tc.args, c, dir), 1, tc.want)
			if strings.Contains(out, pw) {
				t.Error("the error shows the password")
			}
			if labtest.Mounted(dir) {
				t.Error("something got mounted")
			}
		})
	}
}

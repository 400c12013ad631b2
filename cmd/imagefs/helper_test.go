package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseHelperArgs(t *testing.T) {
	h, err := parseHelperArgs([]string{"images/linux", "/var/lib/images", "-s", "-n", "-o", "rw,allow_other", "-vf", "-onofail", "-t", "fuse.imagefs"})
	if err != nil {
		t.Fatal(err)
	}
	want := helperArgs{spec: "images/linux", dir: "/var/lib/images", opts: []string{"rw", "allow_other", "nofail"}, sloppy: true, fake: true, verbose: true}
	if h.spec != want.spec || h.dir != want.dir || !slices.Equal(h.opts, want.opts) || h.sloppy != want.sloppy || h.fake != want.fake || h.verbose != want.verbose {
		t.Errorf("got %+v, want %+v", h, want)
	}
	for _, bad := range [][]string{
		{"images"},
		{"images", "/mnt", "extra"},
		{"images", "/mnt", "-o"},
		{"images", "/mnt", "-x"},
		{"images", "/mnt", "-t", "nfs"},
		{"images", "/mnt", "-N", "/proc/1/ns/mnt"},
	} {
		if _, err := parseHelperArgs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		} else if _, ok := err.(*usageError); !ok {
			t.Errorf("%q: %v is not a usage error", bad, err)
		}
	}
}

func TestTranslateOptions(t *testing.T) {
	p, err := translateOptions(strings.Split("defaults,rw,_netdev,nofail,noauto,x-systemd.requires=network-online.target,comment=x,"+
		"allow_other,ro,uid=107,segment_size=64MiB,sha256=false,cache-dir=/var/cache/imagefs/images,os_password_file=/etc/p,env=/etc/imagefs/images.env,log=/var/log/i.log", ","), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--allow-other", "--read-only", "--uid=107", "--segment-size=64MiB", "--sha256=false", "--cache-dir=/var/cache/imagefs/images", "--os-password-file=/etc/p"}
	if !slices.Equal(p.flags, want) {
		t.Errorf("flags %q, want %q", p.flags, want)
	}
	if p.envFile != "/etc/imagefs/images.env" || p.logFile != "/var/log/i.log" {
		t.Errorf("env %q log %q", p.envFile, p.logFile)
	}

	_, err = translateOptions([]string{"bogus", "os_password=hunter2", "segment_size", "env", "noexec"}, false)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	for _, w := range []string{"unknown option bogus", "-o os_password: a secret", "-o segment_size needs a value", "-o env needs a file", "unknown option noexec"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not say %q", msg, w)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error %q shows the secret", msg)
	}

	p, err = translateOptions([]string{"bogus", "allow_other"}, true)
	if err != nil || !slices.Equal(p.flags, []string{"--allow-other"}) || len(p.warnings) != 1 {
		t.Errorf("sloppy: %+v, %v; want --allow-other and one warning", p, err)
	}
}

func TestReadEnvFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "images.env")
	text := "# comment\n; comment\n\nOS_AUTH_URL=http://k:5000/v3\n  OS_USERNAME = imagefs \nexport OS_PROJECT_NAME=service\n" +
		"OS_PASSWORD=\"with spaces and = sign\"\nIMAGEFS_SEGMENT_SIZE='64MiB'\nEMPTY=\n"
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	env, err := readEnvFile(p)
	want := []string{"OS_AUTH_URL=http://k:5000/v3", "OS_USERNAME=imagefs", "OS_PROJECT_NAME=service",
		"OS_PASSWORD=with spaces and = sign", "IMAGEFS_SEGMENT_SIZE=64MiB", "EMPTY="}
	if err != nil || !slices.Equal(env, want) {
		t.Errorf("got %q, %v; want %q", env, err, want)
	}
	if err := os.WriteFile(p, []byte("OS_USERNAME=a\nsecret-password-line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readEnvFile(p); err == nil || !strings.Contains(err.Error(), "line 2: not VAR=value") || strings.Contains(err.Error(), "secret-password") {
		t.Errorf("bad line: %v, want line 2 named and not quoted", err)
	}
	if _, err := readEnvFile(p + ".missing"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestLogPath(t *testing.T) {
	for dir, want := range map[string]string{
		"/var/lib/images": "/var/log/imagefs/var-lib-images.log",
		"/mnt/":           "/var/log/imagefs/mnt.log",
		"/":               "/var/log/imagefs/-.log",
	} {
		if got := logPath(dir); got != want {
			t.Errorf("logPath(%q) = %q, want %q", dir, got, want)
		}
	}
}

func TestDaemonEnv(t *testing.T) {
	t.Setenv("OS_PASSWORD", "from-the-shell")
	t.Setenv("IMAGEFS_UID", "5")
	t.Setenv("NOTIFY_SOCKET", "/run/x")
	t.Setenv("CREDENTIALS_DIRECTORY", "/run/credentials/x")
	env := daemonEnv([]string{"OS_USERNAME=imagefs"})
	for _, kv := range env {
		if strings.HasPrefix(kv, "OS_PASSWORD=") || strings.HasPrefix(kv, "IMAGEFS_UID=") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			t.Errorf("with an env file, the daemon gets %q from the shell", kv)
		}
	}
	if !slices.Contains(env, "OS_USERNAME=imagefs") || !slices.Contains(env, "CREDENTIALS_DIRECTORY=/run/credentials/x") {
		t.Errorf("env %q lacks the file's variables or the systemd credentials", env)
	}
	if env := daemonEnv(nil); !slices.Contains(env, "OS_PASSWORD=from-the-shell") {
		t.Error("without an env file, the shell's OS_* variables are not passed on")
	}
}

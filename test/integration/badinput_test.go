//go:build integration

package integration

import (
	"github.com/imagefs/imagefs/test/labtest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInputFailsBeforeMounting: each operator mistake gives one clear
// line on stderr, a non-zero exit, no stack trace and nothing mounted.
func TestBadInputFailsBeforeMounting(t *testing.T) {
	c := labtest.NewContainer(t)
	// Credentials that went bad: an expired application credential, a
	// deleted trust.
	acID, _ := labtest.NewAppCredential(t, time.Hour)
	expiredAC, expiredSecret := labtest.NewAppCredential(t, 2*time.Second)
	goneTrust := labtest.NewTrust(t)
	if err := labtest.DeleteTrust(goneTrust); err != nil {
		t.Fatal(err)
	}
	svcEnv := labtest.ServiceUserEnv()
	userTok := string(labtest.UserToken(t))
	time.Sleep(3 * time.Second) // expiredAC is now
	for _, tc := range []struct {
		name   string
		env    []string
		args   func(dir string) []string
		status int
		want   string
	}{
		{
			name:   "wrong password",
			env:    []string{"OS_PASSWORD=not-the-password"},
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "Keystone refused the credentials (HTTP 401",
		},
		{
			name:   "wrong application credential secret",
			env:    []string{"OS_APPLICATION_CREDENTIAL_ID=" + acID, "OS_APPLICATION_CREDENTIAL_SECRET=not-the-password"},
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "the application credential " + acID + " is wrong",
		},
		{
			name:   "expired application credential",
			env:    []string{"OS_APPLICATION_CREDENTIAL_ID=" + expiredAC, "OS_APPLICATION_CREDENTIAL_SECRET=" + string(expiredSecret)},
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "deleted, or expired: check it with 'openstack application credential show " + expiredAC,
		},
		{
			name:   "deleted trust",
			env:    append([]string{"OS_TRUST_ID=" + goneTrust}, svcEnv...),
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "the trust " + goneTrust + " does not exist (deleted or expired)",
		},
		{
			name:   "wrong service password",
			env:    append(append([]string{"OS_TOKEN=" + userTok}, svcEnv...), "IMAGEFS_SERVICE_PASSWORD=not-the-password"),
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "check the service user's credentials",
		},
		{
			name:   "invalid user token",
			env:    append([]string{"OS_TOKEN=gAAAAAnot-the-password"}, svcEnv...),
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "the user token (OS_TOKEN) is not valid",
		},
		{
			name: "service user without the service role",
			env: append(append([]string{"OS_TOKEN=" + userTok}, svcEnv...), "IMAGEFS_SERVICE_USERNAME="+os.Getenv("OS_USERNAME"),
				"IMAGEFS_SERVICE_PASSWORD="+os.Getenv("OS_PASSWORD"), "IMAGEFS_SERVICE_PROJECT_NAME="+os.Getenv("OS_PROJECT_NAME")),
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "Swift refused the service token for container",
		},
		{
			name:   "service token without service user",
			env:    []string{"OS_TOKEN=" + userTok},
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "service-token mode needs the service user",
		},
		{
			name:   "unknown auth type",
			env:    []string{"OS_AUTH_TYPE=v3oidcpassword"},
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   `auth type "v3oidcpassword"`,
		},
		{
			name:   "unknown container",
			args:   func(dir string) []string { return []string{"no-such-container-x", dir} },
			status: 1,
			want:   `container "no-such-container-x" does not exist`,
		},
		{
			name:   "missing mountpoint",
			args:   func(dir string) []string { return []string{c, filepath.Join(dir, "nope")} },
			status: 1,
			want:   "does not exist: create it first",
		},
		{
			name:   "unreachable auth URL",
			env:    []string{"OS_AUTH_URL=http://127.0.0.1:9/v3"},
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "cannot reach Keystone at http://127.0.0.1:9/v3",
		},
		{
			name:   "unreachable Swift",
			env:    []string{"OS_STORAGE_URL=http://127.0.0.1:9/v1/AUTH_nowhere"},
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   `cannot reach container "` + c + `" at http://127.0.0.1:9/v1/AUTH_nowhere (tried for 10s): `,
		},
		{
			name:   "missing password",
			env:    []string{"OS_PASSWORD="},
			args:   func(dir string) []string { return []string{c, dir} },
			status: 1,
			want:   "no password: set OS_PASSWORD",
		},
		{
			name:   "bad segment size",
			args:   func(dir string) []string { return []string{"--segment-size", "12 parsecs", c, dir} },
			status: 1,
			want:   `--segment-size: "12 parsecs" is not a size`,
		},
		{
			name:   "missing argument",
			args:   func(dir string) []string { return []string{c} },
			status: 2,
			want:   "mount needs CONTAINER[/PREFIX] and MOUNTPOINT",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := labtest.MountFails(t, tc.env, tc.args(dir), tc.status, tc.want)
			for _, secret := range []string{"not-the-password", userTok, string(expiredSecret), os.Getenv("LAB_SERVICE_PASSWORD"), os.Getenv("OS_PASSWORD")} {
				if strings.Contains(out, secret) {
					t.Error("a secret appears in the output")
				}
			}
			if labtest.Mounted(dir) {
				t.Error("something got mounted")
			}
		})
	}
}

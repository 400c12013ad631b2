//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestCredentialRotation: a user's password is changed in Keystone (which
// revokes the user's tokens) and in the mount's --os-password-file; the
// mount picks the new one up on SIGHUP (polling off), or by itself when
// the file changes (polling every second), renews with it, and keeps
// reading and writing past the expiry of the last token of the old
// password. A SIGHUP while the file is missing keeps the old password and
// warns. Each variant has a user of its own. The two run at once (they
// mostly wait): about one token lifetime in all.
func TestCredentialRotation(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for _, sighup := range []bool{true, false} {
		name := map[bool]string{true: "sighup", false: "file-change"}[sighup]
		wg.Go(func() { t.Run(name, func(t *testing.T) { testRotation(t, sighup) }) })
	}
	wg.Wait()
}

func testRotation(t *testing.T, sighup bool) {
	lifetime := labtest.TokenLifetime(t)
	pw1 := fmt.Sprintf("rotation-old-%d", time.Now().UnixNano())
	pw2 := fmt.Sprintf("rotation-new-%d", time.Now().UnixNano())
	user, id := labtest.NewUser(t, pw1)
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(pw1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := labtest.NewContainer(t)
	poll := "1s"
	if sighup {
		poll = "0"
	}
	env := []string{"OS_USERNAME=" + user, "OS_PASSWORD=", "OS_USER_DOMAIN_NAME=Default"}
	d := labtest.Mount(t, c, labtest.MountOpts{Env: env, Args: []string{"--os-password-file", pwFile, "--secret-poll-interval", poll}})
	write := func(name string) {
		t.Helper()
		data := []byte("written at " + time.Now().String())
		if err := os.WriteFile(d.Path(name), data, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		if b, err := os.ReadFile(d.Path(name)); err != nil || string(b) != string(data) {
			t.Fatalf("read back %s: %q %v", name, b, err)
		}
		if in, err := labtest.Swift.Head(t.Context(), c, name); err != nil || in.Size != int64(len(data)) {
			t.Fatalf("%s in Swift: %+v %v", name, in, err)
		}
	}
	write("before.img")

	if sighup {
		// A reload that cannot read the file keeps the old password.
		if err := os.Rename(pwFile, pwFile+".away"); err != nil {
			t.Fatal(err)
		}
		_ = d.Cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 15*time.Second, "the warning about the missing file", func() bool {
			return strings.Contains(d.LogText(), "cannot read a secret file; keeping the credentials in use")
		})
		if err := os.Rename(pwFile+".away", pwFile); err != nil {
			t.Fatal(err)
		}
	}

	// The rotation: Keystone first (the user's tokens are revoked), then
	// the file.
	labtest.SetPassword(t, id, pw2)
	rotated := time.Now()
	if err := os.WriteFile(pwFile, []byte(pw2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if sighup {
		// Polling is off: only the signal can make it read the file.
		time.Sleep(3 * time.Second)
		if strings.Contains(d.LogText(), "credentials reloaded") {
			t.Fatal("reloaded without SIGHUP while polling is off")
		}
		_ = d.Cmd.Process.Signal(syscall.SIGHUP)
	}
	waitFor(t, 20*time.Second, `"credentials reloaded" in the log`, func() bool {
		return strings.Contains(d.LogText(), "msg=\"credentials reloaded\"")
	})
	log := d.LogText()
	if !strings.Contains(log, "works=true") || !strings.Contains(log, `why="credentials reloaded"`) {
		t.Errorf("the reload did not renew the token with the new password")
	}
	write("after-reload.img")

	// Past the expiry of any token of the old password: the scheduled
	// renewals use the new one.
	time.Sleep(time.Until(rotated.Add(lifetime + 5*time.Second)))
	write("after-expiry.img")
	d.Stop()
	st := d.KeeperStats()
	t.Logf("keeper: %+v", st)
	if st.Renewals < 2 {
		t.Errorf("%d renewals, want the reload's and at least one scheduled", st.Renewals)
	}
	if st.Failures != 0 || st.Swift401 != 0 {
		t.Errorf("%d failed renewals, %d 401s from Swift", st.Failures, st.Swift401)
	}
	if strings.Contains(d.LogText(), "level=ERROR") {
		t.Error("errors in the log")
	}
	d.CheckNoSecrets(pw1, pw2)
}

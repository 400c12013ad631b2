package auth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestReload: a rotated password is used at once (a renewal with it),
// then by every renewal; unchanged secrets do nothing; a wrong new
// password is kept but the current token stays in use; anything but a
// secret, or an invalid configuration, is refused and changes nothing.
func TestReload(t *testing.T) {
	d := newDouble(t)
	cfg := Config{Identity: demoUser}
	k, lb := newDoubleKeeper(t, d, cfg)
	cfg.AuthURL = d.authURL()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = k.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	d.mu.Lock()
	d.demoPW = "demo-pw-2"
	d.mu.Unlock()
	next := cfg
	next.Password = "demo-pw-2"
	gen := k.Current().Gen
	changed, err := k.Reload(t.Context(), next)
	if err != nil || !slices.Equal(changed, []string{"password"}) {
		t.Fatalf("Reload: %v %v", changed, err)
	}
	if k.Current().Gen != gen+1 {
		t.Errorf("generation %d after the reload, want %d", k.Current().Gen, gen+1)
	}
	d.mu.Lock()
	body := d.bodies[len(d.bodies)-1]
	d.mu.Unlock()
	if pw, _ := body["auth"].(map[string]any)["identity"].(map[string]any)["password"].(map[string]any)["user"].(map[string]any)["password"].(string); pw != "demo-pw-2" {
		t.Error("the renewal after the reload did not use the new password")
	}
	// A later renewal (a 401, say) uses the new password too.
	if _, err := k.Invalidate(t.Context(), k.Current().Gen); err != nil {
		t.Errorf("renewal after the reload: %v", err)
	}
	if changed, err := k.Reload(t.Context(), next); changed != nil || err != nil {
		t.Errorf("Reload without a change: %v %v", changed, err)
	}

	wrong := next
	wrong.Password = "pw-not-this"
	gen = k.Current().Gen
	changed, err = k.Reload(t.Context(), wrong)
	if !errors.Is(err, ErrCredentials) || len(changed) != 1 {
		t.Errorf("Reload with a wrong password: %v %v, want ErrCredentials", changed, err)
	}
	if k.Current().Gen != gen {
		t.Error("a failed renewal replaced the token")
	}
	if !strings.Contains(lb.String(), "the reloaded credentials do not work") {
		t.Error("no warning about the new credentials")
	}

	other := next
	other.Username = "someone-else"
	if changed, err := k.Reload(t.Context(), other); !errors.Is(err, ErrNotReloadable) || changed != nil {
		t.Errorf("Reload with another user: %v %v, want ErrNotReloadable", changed, err)
	}
	empty := next
	empty.Password = ""
	if changed, err := k.Reload(t.Context(), empty); err == nil || changed != nil {
		t.Errorf("Reload without a password: %v %v", changed, err)
	}
	for _, s := range []string{"demo-pw-2", "pw-not-this"} {
		if strings.Contains(lb.String(), s) {
			t.Errorf("the log shows a password")
		}
	}
}

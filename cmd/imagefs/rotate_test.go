package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagefs/imagefs/auth"
)

// fakeReloader records the configurations given to Reload.
type fakeReloader struct {
	mu   sync.Mutex
	got  []auth.Config
	fail error // returned with no names: a refusal
}

func (f *fakeReloader) Reload(_ context.Context, cfg auth.Config) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.got = append(f.got, cfg)
	return []string{"password"}, nil
}

// TestSecretWatcher: a changed file is taken once two polls agree, then
// given to the keeper; an unreadable file is warned about once and keeps
// the secret; SIGHUP takes the file at once, or nothing if one cannot be
// read; a refused reload restores the old secret. No secret is logged.
func TestSecretWatcher(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	write := func(v string) {
		t.Helper()
		if err := os.WriteFile(pwFile, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("pw-one\n")
	var cfg Config
	authFlags(&cfg) // makes cfg.secrets
	var src *secretSource
	for _, s := range cfg.secrets {
		if s.name == "os-password" {
			src = s
		}
	}
	if err := src.fromFile(pwFile); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	fk := &fakeReloader{}
	w := newSecretWatcher(&cfg, fk, slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { signal.Stop(w.hup) })
	ctx := t.Context()

	w.poll(ctx)
	if len(fk.got) != 0 {
		t.Fatal("reloaded an unchanged file")
	}
	write("pw-two\n")
	w.poll(ctx)
	if len(fk.got) != 0 || cfg.Auth.Password != "pw-one" {
		t.Fatal("took a change seen by one poll only")
	}
	w.poll(ctx)
	if len(fk.got) != 1 || fk.got[0].Password != "pw-two" || cfg.Auth.Password != "pw-two" {
		t.Fatalf("after two polls: %d reloads, password changed: %v", len(fk.got), cfg.Auth.Password == "pw-two")
	}
	w.poll(ctx)
	if len(fk.got) != 1 {
		t.Error("reloaded again without a change")
	}

	write("")
	for range 4 {
		w.poll(ctx)
	}
	if n := strings.Count(logs.String(), "cannot read a secret file"); n != 1 || cfg.Auth.Password != "pw-two" {
		t.Errorf("empty file: %d warnings, password kept: %v", n, cfg.Auth.Password == "pw-two")
	}
	w.reload(ctx) // SIGHUP with the file unreadable
	if len(fk.got) != 1 || !strings.Contains(logs.String(), "SIGHUP: cannot read a secret file; keeping the credentials in use") {
		t.Error("SIGHUP with an empty file")
	}
	write("pw-three")
	w.reload(ctx)
	if len(fk.got) != 2 || fk.got[1].Password != "pw-three" || !strings.Contains(logs.String(), "credentials reloaded") {
		t.Errorf("SIGHUP: %d reloads", len(fk.got))
	}

	fk.fail = auth.ErrNotReloadable
	write("pw-four")
	w.reload(ctx)
	if cfg.Auth.Password != "pw-three" || !strings.Contains(logs.String(), "the rotated secrets cannot be used") {
		t.Errorf("a refused reload: password restored %v", cfg.Auth.Password == "pw-three")
	}
	for _, s := range []string{"pw-one", "pw-two", "pw-three", "pw-four"} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log shows a password")
		}
	}
}

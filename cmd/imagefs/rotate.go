package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/auth"
)

// Credential rotation without a remount. The secrets read from files
// (--NAME-file, systemd credentials) are read again on SIGHUP (systemctl
// reload) and, every --secret-poll-interval, when a file's content
// changed; the keeper then uses them (auth.Keeper.Reload). Polling rather
// than inotify: a stat-free read of one to three small files every few
// seconds costs nothing, needs no dependency, and sees what inotify
// misses: a file replaced by rename or a symlink swap (Kubernetes secrets,
// systemd credentials), and files on network filesystems.

// rotationFlags configure the rotation.
func rotationFlags(c *Config) []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "secret-poll-interval", EnvVars: []string{"IMAGEFS_SECRET_POLL_INTERVAL"}, Value: 5 * time.Second,
			Destination: &c.SecretPoll, Category: "Auth mode",
			Usage: "how often the secret files (--os-password-file, ..., systemd credentials) are read for a rotated secret; 0: only on SIGHUP"},
	}
}

// reloader is what the watcher needs of the keeper (*auth.Keeper).
type reloader interface {
	Reload(ctx context.Context, cfg auth.Config) ([]string, error)
}

// secretWatcher reloads the rotated secrets of a mount.
type secretWatcher struct {
	cfg    *Config
	keeper reloader
	log    *slog.Logger
	hup    chan os.Signal

	// pending is what the last poll read where it differed from the
	// secret in use (by source; a read error as its message): a change is
	// taken when two polls in a row read the same, so that a file being
	// written is not taken half-written.
	pending map[*secretSource]string
	warned  map[*secretSource]string // the read error last warned about
}

// newSecretWatcher catches SIGHUP at once (its default is to end the
// process); Run serves it.
func newSecretWatcher(cfg *Config, keeper reloader, log *slog.Logger) *secretWatcher {
	w := &secretWatcher{cfg: cfg, keeper: keeper, log: log, hup: make(chan os.Signal, 1),
		pending: map[*secretSource]string{}, warned: map[*secretSource]string{}}
	signal.Notify(w.hup, syscall.SIGHUP)
	return w
}

// sources are the secrets that can be rotated: those read from a file,
// but the user token (a new one needs a remount: auth.Keeper.Reload).
func (w *secretWatcher) sources() []*secretSource {
	var out []*secretSource
	for _, s := range w.cfg.secrets {
		if s.file != "" && s.name != "os-token" {
			out = append(out, s)
		}
	}
	return out
}

// Run serves SIGHUP and polls the files until ctx ends.
func (w *secretWatcher) Run(ctx context.Context) {
	defer signal.Stop(w.hup)
	var tick <-chan time.Time
	if p := w.cfg.SecretPoll; p > 0 && len(w.sources()) > 0 {
		t := time.NewTicker(p)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.hup:
			w.reload(ctx)
		case <-tick:
			w.poll(ctx)
		}
	}
}

// reload (SIGHUP) reads every secret file again and takes what changed;
// if one cannot be read, it keeps all the secrets in use.
func (w *secretWatcher) reload(ctx context.Context) {
	if len(w.sources()) == 0 {
		w.log.Info("SIGHUP: no password or secret comes from a file or systemd credential; nothing to reload")
		return
	}
	next := map[*secretSource]auth.Secret{}
	for _, s := range w.sources() {
		v, err := readSecret(s.file)
		if err != nil {
			w.log.Warn("SIGHUP: cannot read a secret file; keeping the credentials in use", "secret", s.name, "file", s.file, "err", err)
			return
		}
		next[s] = v
	}
	if !w.apply(ctx, next, "SIGHUP") {
		w.log.Info("SIGHUP: the secret files are unchanged", "files", len(next))
	}
}

// poll takes the files whose content changed and then stayed the same for
// one poll; it warns once about a file it cannot read.
func (w *secretWatcher) poll(ctx context.Context) {
	next := map[*secretSource]auth.Secret{}
	for _, s := range w.sources() {
		v, err := readSecret(s.file)
		seen := string(v)
		if err != nil {
			seen = "error: " + err.Error()
		}
		if err == nil && v == *s.dst {
			delete(w.pending, s)
			delete(w.warned, s)
			continue
		}
		prev, ok := w.pending[s]
		w.pending[s] = seen
		if !ok || prev != seen {
			continue // wait one more poll
		}
		if err != nil {
			if w.warned[s] != seen {
				w.warned[s] = seen
				w.log.Warn("cannot read a secret file; keeping the credentials in use", "secret", s.name, "file", s.file, "err", err)
			}
			continue
		}
		next[s] = v
	}
	if w.apply(ctx, next, "file changed") {
		for s := range next {
			delete(w.pending, s)
			delete(w.warned, s)
		}
	}
}

// apply sets the changed secrets and gives them to the keeper; on a
// refusal it restores the previous ones. It reports whether something
// changed.
func (w *secretWatcher) apply(ctx context.Context, next map[*secretSource]auth.Secret, trigger string) bool {
	old := map[*secretSource]auth.Secret{}
	var names, files []string
	for s, v := range next {
		if v != *s.dst {
			old[s] = *s.dst
			*s.dst = v
			names, files = append(names, s.name), append(files, s.file)
		}
	}
	if len(old) == 0 {
		return false
	}
	changed, err := w.keeper.Reload(ctx, w.cfg.Auth)
	if changed == nil {
		for s, v := range old {
			*s.dst = v
		}
		if err != nil {
			w.log.Warn("the rotated secrets cannot be used; keeping the credentials in use", "trigger", trigger, "secrets", strings.Join(names, ","), "err", err)
		}
		return err != nil
	}
	// The keeper warns if they do not work.
	w.log.Info("credentials reloaded", "trigger", trigger, "secrets", strings.Join(names, ","), "files", strings.Join(files, ","),
		"works", err == nil)
	return true
}

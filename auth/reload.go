package auth

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotReloadable: Reload was given a configuration that differs in more
// than the secrets it can take without a remount.
var ErrNotReloadable = errors.New("only passwords and application-credential secrets can change without a remount")

// Reload makes the keeper authenticate with the secrets of cfg from now
// on: the passwords and application-credential secrets of the user and of
// the service user (rotated by an operator). Everything else in cfg must
// be as given to New (ErrNotReloadable otherwise), and so must the user
// token of service-token mode. It returns the names of the secrets that
// changed (nil: none, nothing done).
//
// The new secrets are used at once, for a renewal that shows whether they
// work; its error is returned (with the changed names: the new secrets
// stay in use, since the operator may be halfway through a rotation, and
// the scheduled renewals keep trying). Errors from Validate or
// ErrNotReloadable come with no names: the old secrets stay in use. Run
// must be running. Reload is safe for concurrent use.
func (k *Keeper) Reload(ctx context.Context, cfg Config) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	k.mu.Lock()
	old := k.secrets
	k.mu.Unlock()
	if blank(cfg) != blank(old) {
		return nil, ErrNotReloadable
	}
	if cfg.Token != old.Token {
		return nil, fmt.Errorf("%w: the user token (OS_TOKEN) cannot be replaced in a running mount: remount with the new one", ErrNotReloadable)
	}
	var changed []string
	for _, s := range []struct {
		name     string
		old, new Secret
	}{
		{"password", old.Password, cfg.Password},
		{"application credential secret", old.ApplicationCredentialSecret, cfg.ApplicationCredentialSecret},
		{"service user's password", old.Service.Password, cfg.Service.Password},
		{"service user's application credential secret", old.Service.ApplicationCredentialSecret, cfg.Service.ApplicationCredentialSecret},
	} {
		if s.old != s.new {
			changed = append(changed, s.name)
		}
	}
	if cfg.trusteeFromOS && len(changed) == 2 && changed[0] == "password" {
		changed = changed[:1] // the trustee's password is OS_PASSWORD
	}
	if changed == nil {
		return nil, nil
	}
	iss := newIssuer(cfg, k.log)
	if ac, ok := iss.(*appCredIssuer); ok && cfg.ApplicationCredentialSecret != old.ApplicationCredentialSecret {
		// A new secret is often a new credential of the same name, with
		// its own expiry.
		ac.reread.Store(true)
	}
	k.mu.Lock()
	k.iss, k.secrets = iss, cfg
	running := k.inflight
	k.mu.Unlock()
	if running != nil {
		// That renewal uses the old secrets: renew again after it.
		select {
		case <-running:
		case <-ctx.Done():
			return changed, ctx.Err()
		}
	}
	if _, err := k.renew(ctx, k.cur.Load().Gen, "credentials reloaded", true); err != nil {
		k.log.Warn("the reloaded credentials do not work (yet): still using the current token; the scheduled renewals use the new ones",
			"changed", changed, "token_expires_in", k.Stats().ExpiresIn.Round(1e9), "err", err)
		return changed, err
	}
	return changed, nil
}

// blank is cfg without the secrets Reload may change.
func blank(cfg Config) Config {
	cfg.Password, cfg.ApplicationCredentialSecret = "", ""
	cfg.Service.Password, cfg.Service.ApplicationCredentialSecret = "", ""
	return cfg
}

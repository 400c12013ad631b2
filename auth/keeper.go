// Package auth keeps Keystone credentials fresh for the Swift data path.
//
// A Keeper obtains a token (gophercloud v2, Keystone v3) when it is created,
// so bad credentials fail before anything is mounted, then renews it in the
// background (Run, one goroutine owned by the mount) well before it
// expires: at max(RenewMargin, 10% of the lifetime) before expiry, or at
// half the lifetime for short-lived tokens, minus a little jitter, so the
// same schedule suits a 2-minute token and a 24-hour one. The lifetime is
// expires_at − issued_at of Keystone's answer, applied to the local clock
// from the moment the request was sent, so clock skew between the hosts
// does not matter.
//
// Four modes (Mode): a user's password; an application credential; a trust
// consumed by the service user; and service tokens, where the user's token
// (never renewed: it cannot be) travels with the service user's token,
// which Swift's keystonemiddleware requires to accept the user token after
// its expiry, within Keystone's allow_expired_window.
//
// Swift requests get the credential from the Keeper's Transport, which
// stamps X-Auth-Token (and X-Service-Token) on every request, so no request
// starts with a token about to expire. While Keystone is unreachable the
// current token stays in use and renewals are retried with backoff; only
// when the token is about to expire do new requests wait (Wait). A 401 from
// Swift triggers one renewal shared by all the callers that saw it
// (Invalidate). A subtle case: right after a renewal, during a Keystone
// outage, Swift cannot validate the new token (it has never seen it, and
// answers 401) while it still accepts the previous one from its cache; the
// keeper then falls back to the previous token while that is valid.
//
// Nothing in this package logs a token or a secret: they are Secrets. The
// package imports no other package of the project.
package auth

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Credential is what a request needs: tokens and the account's URL. It is
// immutable.
type Credential struct {
	Token        Secret // X-Auth-Token
	ServiceToken Secret // X-Service-Token (service-token mode), or empty
	StorageURL   string // account URL, without a trailing slash
	ProjectID    string // the account's project
	UserID       string // the user the token acts as
	ProjectName  string // names of the two, if Keystone gave them
	UserName     string

	// The token the keeper renews (the service token in service-token
	// mode). Times are on the local clock.
	Lifetime time.Duration // expires_at − issued_at
	Issued   time.Time     // when the request for it was sent
	Expires  time.Time     // Issued + Lifetime

	// UserExpires is when the user token expired or expires
	// (service-token mode).
	UserExpires time.Time
	// HardDeadline is when renewing stops helping: an application
	// credential's expiry, or the end of the allow-expired window of the
	// user token. Zero if there is none.
	HardDeadline time.Time
	// Final: this token already lasts until HardDeadline (Keystone caps
	// tokens of an application credential at its expiry), so no renewal
	// can extend it.
	Final bool

	Gen uint64 // increases with every renewal
}

// issuer obtains a new credential; one per auth mode. prev is the
// credential in use (nil the first time); errors are explained for an
// operator.
type issuer interface {
	issue(ctx context.Context, prev *Credential) (*Credential, error)
}

// Keeper owns the credentials of a mount. It is safe for concurrent use.
type Keeper struct {
	cfg Config // as given to New; the issuer holds the current secrets (Reload)
	log *slog.Logger

	cur atomic.Pointer[Credential]
	// fb, when set for the current generation, makes requests use the
	// previous credential: Swift refused the current one and Keystone
	// could not renew it (see the package doc).
	fb atomic.Pointer[fallback]

	mu       sync.Mutex    // guards the fields below
	iss      issuer        // replaced by Reload
	secrets  Config        // the configuration iss was made from
	inflight chan struct{} // closed when the running renewal ends
	lastErr  error         // result of the last renewal
	lastFail time.Time     // when the last renewal failed
	prev     *Credential   // the credential before cur
	fbTried  uint64        // the generation a fallback was last tried for
	changed  chan struct{} // closed (and replaced) when cur changes

	renewals   atomic.Int64 // successful renewals
	failures   atomic.Int64 // failed renewal attempts
	rejections atomic.Int64 // 401 answers from Swift
	fallbacks  atomic.Int64 // times the previous token was used as a fallback

	nextWarn time.Time // next deadline warning (Run's goroutine, New before it)

	wg sync.WaitGroup // renewals in progress
}

type fallback struct {
	forGen uint64      // the current generation it applies to
	use    *Credential // the previous credential
}

// minTokenAge keeps a Swift that answers 401 to every fresh token (a
// missing role, say) from turning each request into a Keystone login: a
// 401 renews only a token older than this, and a failed renewal is not
// retried on a 401 sooner than this.
const minTokenAge = 10 * time.Second

// New checks the configuration and obtains the first token, so that wrong
// credentials, an unreachable Keystone or a missing endpoint are reported
// at once. Call Run to keep the token fresh.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Keeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return newKeeper(ctx, cfg, log, newIssuer(cfg, log))
}

// newIssuer is the issuer of cfg's mode (cfg with defaults).
func newIssuer(cfg Config, log *slog.Logger) issuer {
	switch cfg.Mode {
	case ModePassword:
		return &passwordIssuer{cfg: cfg}
	case ModeAppCredential:
		return &appCredIssuer{cfg: cfg}
	case ModeTrust:
		return &trustIssuer{cfg: cfg}
	case ModeServiceToken:
		return &serviceTokenIssuer{cfg: cfg, log: log}
	}
	return nil
}

// newKeeper is New with a given issuer (tests use fakes).
func newKeeper(ctx context.Context, cfg Config, log *slog.Logger, iss issuer) (*Keeper, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Keeper{cfg: cfg, log: log, iss: iss, secrets: cfg, changed: make(chan struct{})}
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	c, err := iss.issue(rctx, nil)
	cancel()
	if err != nil {
		return nil, err
	}
	c.Gen = 1
	k.cur.Store(c)
	attrs := []any{"mode", cfg.Mode, "project_id", c.ProjectID, "user_id", c.UserID,
		"storage_url", c.StorageURL, "lifetime", c.Lifetime.Round(time.Second)}
	if !c.UserExpires.IsZero() {
		attrs = append(attrs, "user_token_expires_in", time.Until(c.UserExpires).Round(time.Second))
	}
	if !c.HardDeadline.IsZero() {
		attrs = append(attrs, "usable_until", c.HardDeadline.UTC().Format(time.RFC3339))
	}
	log.Debug("keystone credentials obtained", attrs...)
	k.checkDeadline(c)
	return k, nil
}

// Mode is the auth mode in use.
func (k *Keeper) Mode() Mode { return k.cfg.Mode }

// Current returns the newest credential.
func (k *Keeper) Current() *Credential { return k.cur.Load() }

// active is the credential requests should use: the current one, or the
// previous one while the fallback is on and that one is still valid.
func (k *Keeper) active() *Credential {
	c := k.cur.Load()
	if f := k.fb.Load(); f != nil && f.forGen == c.Gen && time.Now().Before(f.use.Expires.Add(-fallbackMargin(f.use))) {
		return f.use
	}
	return c
}

// fallbackMargin: the previous token is used as a fallback only while it
// has at least this much left (Swift checks expiry at request start).
func fallbackMargin(c *Credential) time.Duration { return max(5*time.Second, c.Lifetime/20) }

// minRemaining: requests wait for a renewal rather than start with less
// than this left on the token.
func (k *Keeper) minRemaining(c *Credential) time.Duration {
	return min(k.cfg.MinRemaining, c.Lifetime/4)
}

// Wait returns the credential to use for a request. It blocks only when
// the token is about to expire (less than MinRemaining left, or a quarter
// of its lifetime) and a renewal could still help: until the keeper's Run
// renews it, or ctx ends. Run must be running.
func (k *Keeper) Wait(ctx context.Context) (*Credential, error) {
	for {
		c := k.active()
		if c != k.cur.Load() || c.Final || time.Now().Before(c.Expires.Add(-k.minRemaining(c))) {
			return c, nil
		}
		k.mu.Lock()
		ch := k.changed
		k.mu.Unlock()
		if k.active() != c {
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a Keystone token renewal (the token expires in %v): %w",
				time.Until(c.Expires).Round(time.Second), ctx.Err())
		}
	}
}

// Invalidate reports that Swift rejected the token of generation gen. It
// renews once for all callers: if the token already changed since gen, it
// returns the newer one without asking Keystone, and after a failed
// renewal it does not ask again for minTokenAge.
func (k *Keeper) Invalidate(ctx context.Context, gen uint64) (*Credential, error) {
	return k.renew(ctx, gen, "rejected by Swift", false)
}

// rejected handles a 401 from Swift for a request sent with c.
func (k *Keeper) rejected(ctx context.Context, c *Credential) {
	k.rejections.Add(1)
	if f := k.fb.Load(); f != nil && f.use == c {
		// The previous token is refused too: stop falling back.
		if k.fb.CompareAndSwap(f, nil) {
			k.log.Warn("Swift refused the previous token too; using the current one again", "gen", k.cur.Load().Gen)
		}
		return
	}
	cur := k.cur.Load()
	if c.Gen != cur.Gen {
		return // superseded: the retry takes the newer one
	}
	if !c.HardDeadline.IsZero() && !time.Now().Before(c.HardDeadline) {
		k.log.Debug("Swift answered 401 after the credential's hard deadline", "deadline", c.HardDeadline.UTC().Format(time.RFC3339))
		return // Run reports it; renewing cannot help
	}
	if time.Since(c.Issued) >= minTokenAge {
		_, err := k.renew(ctx, c.Gen, "rejected by Swift", false)
		if err == nil {
			return
		}
		if ctx.Err() == nil {
			k.log.Warn("Swift refused the token and renewing it failed", "gen", c.Gen, "err", err)
		}
	}
	k.fallBack(cur)
}

// fallBack makes requests use the previous credential, if it is still
// valid, once per generation.
func (k *Keeper) fallBack(cur *Credential) {
	k.mu.Lock()
	prev := k.prev
	tried := k.fbTried == cur.Gen
	k.fbTried = cur.Gen
	k.mu.Unlock()
	if tried || prev == nil || prev.Gen+1 != cur.Gen || prev.StorageURL != cur.StorageURL ||
		!time.Now().Before(prev.Expires.Add(-fallbackMargin(prev))) {
		return
	}
	if k.fb.CompareAndSwap(nil, &fallback{forGen: cur.Gen, use: prev}) {
		k.fallbacks.Add(1)
		k.log.Warn("Swift refused the new token and Keystone cannot renew it (while Keystone is down Swift cannot validate tokens it has not seen); using the previous token while it lasts",
			"gen", cur.Gen, "previous_expires_in", time.Until(prev.Expires).Round(time.Second))
	}
}

// renew obtains a new token unless the current one is newer than gen.
// Concurrent calls share one request to Keystone. Unless force, a renewal
// that failed less than minTokenAge ago is not retried.
func (k *Keeper) renew(ctx context.Context, gen uint64, why string, force bool) (*Credential, error) {
	for {
		if c := k.cur.Load(); c.Gen > gen {
			return c, nil
		}
		k.mu.Lock()
		ch := k.inflight
		if ch == nil {
			if !force && k.lastErr != nil && time.Since(k.lastFail) < minTokenAge {
				err := k.lastErr
				k.mu.Unlock()
				return nil, err
			}
			// The renewal serves every waiter: it runs on its own, so that
			// the caller that started it may give up like the others
			// (ncw/swift cancels a request after its ConnectTimeout); it is
			// bounded by Timeout.
			ch = make(chan struct{})
			k.inflight = ch
			k.wg.Go(func() { k.doRenew(ctx, ch, why) })
		}
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		k.mu.Lock()
		err := k.lastErr
		k.mu.Unlock()
		if c := k.cur.Load(); c.Gen > gen {
			return c, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// doRenew asks Keystone for a new credential and publishes the result.
func (k *Keeper) doRenew(ctx context.Context, done chan struct{}, why string) {
	old := k.cur.Load()
	k.mu.Lock()
	iss := k.iss
	k.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.cfg.Timeout)
	c, err := iss.issue(rctx, old)
	cancel()
	k.mu.Lock()
	k.lastErr = err
	if err == nil {
		c.Gen = old.Gen + 1
		k.prev = old
		k.cur.Store(c)
		k.fb.Store(nil)
		close(k.changed)
		k.changed = make(chan struct{})
		k.renewals.Add(1)
	} else {
		k.failures.Add(1)
		k.lastFail = time.Now()
	}
	k.inflight = nil
	k.mu.Unlock()
	close(done)
	if err == nil {
		k.log.Info("keystone token renewed", "why", why, "gen", c.Gen, "lifetime", c.Lifetime.Round(time.Second),
			"expires_in", time.Until(c.Expires).Round(time.Second), "previous_expired_in", time.Until(old.Expires).Round(time.Second),
			"renewals", k.renewals.Load())
	}
}

// renewAt is when the keeper renews c: well before expiry, with jitter so
// that many mounts do not renew at the same instant. A token that already
// lasts until the hard deadline cannot be extended: the keeper tries again
// only when it has expired, to report it.
func (k *Keeper) renewAt(c *Credential) time.Time {
	if c.Final {
		return c.Expires
	}
	return c.Expires.Add(-renewMargin(c.Lifetime, k.cfg.RenewMargin))
}

// renewMargin is how long before expiry a token of lifetime l is renewed:
// max(least, 10% of l), but at most l/2, minus jitter of up to 5% of l.
// For a 2-minute token: after 54–60 s; for a 1-hour one: after 52–55 min;
// for 24 hours: after 20.4–21.6 h.
func renewMargin(l, least time.Duration) time.Duration {
	margin := min(max(least, l/10), l/2)
	if l/20 > 0 {
		margin += time.Duration(rand.Int64N(int64(l / 20)))
	}
	return margin
}

// nextBackoff is the pause after a failed renewal: doubling from 1 s, with
// jitter, capped at a twentieth of the lifetime (at most 1 min), so a
// short-lived token is retried often enough to be renewed in time once
// Keystone is back.
func nextBackoff(prev, lifetime time.Duration) time.Duration {
	ceiling := min(max(lifetime/20, time.Second), time.Minute)
	b := min(max(2*prev, time.Second), ceiling)
	return b/2 + time.Duration(rand.Int64N(int64(b/2)+1))
}

// Run renews the token before it expires until ctx is done. On errors it
// retries with backoff and keeps the current token in use meanwhile. It
// logs the keeper's counters when it returns.
func (k *Keeper) Run(ctx context.Context) error {
	defer func() {
		k.wg.Wait()
		s := k.Stats()
		k.log.Info("token keeper stopped", "renewals", s.Renewals, "renewal_failures", s.Failures,
			"swift_401", s.Rejections, "fallbacks", s.Fallbacks, "expires_in", s.ExpiresIn.Round(time.Second))
	}()
	backoff := time.Duration(0)
	for {
		c := k.cur.Load()
		wait := time.Until(k.renewAt(c))
		if backoff > 0 {
			wait = backoff
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if _, err := k.renew(ctx, c.Gen, "scheduled", true); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = nextBackoff(backoff, c.Lifetime)
			k.renewFailed(ctx, err, backoff)
			continue
		}
		backoff = 0
		k.checkDeadline(k.cur.Load())
	}
}

// renewFailed logs a failed scheduled renewal.
func (k *Keeper) renewFailed(ctx context.Context, err error, retry time.Duration) {
	c := k.cur.Load()
	left := time.Until(c.Expires)
	if !c.HardDeadline.IsZero() && !time.Now().Before(c.HardDeadline) {
		k.log.Error("credentials expired; Swift requests fail until imagefs is restarted with new ones",
			"expired_at", c.HardDeadline.UTC().Format(time.RFC3339), "retry_in", retry.Round(time.Millisecond), "err", err)
		return
	}
	lvl := slog.LevelWarn
	if left < k.minRemaining(c) {
		lvl = slog.LevelError
	}
	k.log.Log(ctx, lvl, "keystone unreachable or refusing; still using the current token",
		"token_expires_in", left.Round(time.Second), "retry_in", retry.Round(time.Millisecond), "err", err)
}

// checkDeadline warns when a hard deadline comes near: when less than
// ExpiryWarning is left (in service-token mode, at most a quarter of the
// allow-expired window), then more and more often.
func (k *Keeper) checkDeadline(c *Credential) {
	if c.HardDeadline.IsZero() {
		return
	}
	now := time.Now()
	left := c.HardDeadline.Sub(now)
	if left <= 0 || now.Before(k.nextWarn) {
		return
	}
	warnAt := k.cfg.ExpiryWarning
	if k.cfg.Mode == ModeServiceToken {
		warnAt = min(warnAt, k.cfg.AllowExpiredWindow/4)
	}
	if left > warnAt {
		return
	}
	k.nextWarn = now.Add(min(max(left/4, 10*time.Second), 6*time.Hour))
	at := c.HardDeadline.UTC().Format(time.RFC3339)
	switch k.cfg.Mode {
	case ModeServiceToken:
		k.log.Warn("the user token can be used only a little longer: Swift accepts an expired user token with a service token only within Keystone's allow_expired_window; remount with a fresh OS_TOKEN before then",
			"usable_for", left.Round(time.Second), "usable_until", at, "user_token_expired_at", c.UserExpires.UTC().Format(time.RFC3339),
			"allow_expired_window", k.cfg.AllowExpiredWindow)
	default:
		k.log.Warn("the application credential expires soon: create a new one (openstack application credential create) and restart imagefs with it before then",
			"application_credential", firstOf(k.cfg.ApplicationCredentialID, k.cfg.ApplicationCredentialName),
			"expires_in", left.Round(time.Second), "expires_at", at)
	}
}

// Stats are the keeper's counters, for logs and metrics.
type Stats struct {
	Mode       Mode
	Generation uint64
	Renewals   int64 // successful renewals
	Failures   int64 // failed renewal attempts
	Rejections int64 // 401 answers from Swift
	Fallbacks  int64 // times the previous token was used as a fallback
	// ExpiresIn is the time left on the renewed token (the service token
	// in service-token mode).
	ExpiresIn time.Duration
	// DeadlineIn is the time left before the hard deadline (application
	// credential expiry, end of the allow-expired window); 0 if none.
	DeadlineIn time.Duration
	LastError  error // of the last renewal attempt, nil if it succeeded
}

// Stats returns the keeper's counters and times to expiry.
func (k *Keeper) Stats() Stats {
	c := k.cur.Load()
	k.mu.Lock()
	lastErr := k.lastErr
	k.mu.Unlock()
	s := Stats{Mode: k.cfg.Mode, Generation: c.Gen, Renewals: k.renewals.Load(), Failures: k.failures.Load(),
		Rejections: k.rejections.Load(), Fallbacks: k.fallbacks.Load(), ExpiresIn: time.Until(c.Expires), LastError: lastErr}
	if !c.HardDeadline.IsZero() {
		s.DeadlineIn = time.Until(c.HardDeadline)
	}
	return s
}

// Renewals is the number of successful renewals so far.
func (k *Keeper) Renewals() int64 { return k.renewals.Load() }

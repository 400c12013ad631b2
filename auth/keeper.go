// Package auth keeps Keystone credentials fresh for the Swift data path.
//
// A Keeper obtains a token (gophercloud v2, Keystone v3) when it is created,
// so bad credentials fail before anything is mounted, then renews it in the
// background well before it expires: at max(RenewMargin, 10% of the
// lifetime) before expiry, or at half the lifetime for short-lived tokens,
// minus a little jitter. The lifetime is measured as expires_at − issued_at
// of Keystone's answer and applied to the local clock from the moment the
// request was sent, so clock skew between the hosts does not matter.
//
// Swift requests get the current token from the Keeper's Transport, which
// stamps X-Auth-Token on every request, so no request starts with a token
// about to expire. A 401 from Swift triggers exactly one renewal, shared by
// all the callers that saw it (Invalidate). While Keystone is unreachable
// the current token stays in use; renewals are retried with backoff.
//
// Nothing in this package logs a token or a secret: they are Secrets.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// Credential is one token with what goes with it. It is immutable.
type Credential struct {
	Token      Secret
	StorageURL string // object-store endpoint, without a trailing slash
	ProjectID  string
	UserID     string
	Lifetime   time.Duration // expires_at − issued_at
	Issued     time.Time     // local clock: when the request for it was sent
	Expires    time.Time     // local clock: Issued + Lifetime
	Gen        uint64        // increases with every renewal
}

// issuer obtains a new token. One per auth mode.
type issuer interface {
	issue(ctx context.Context) (*Credential, error)
}

// Keeper owns the credentials of a mount. It is safe for concurrent use.
type Keeper struct {
	cfg Config
	log *slog.Logger
	iss issuer
	now func() time.Time

	cur atomic.Pointer[Credential]

	mu       sync.Mutex    // guards inflight
	inflight chan struct{} // closed when the running renewal ends
	lastErr  error         // result of the last renewal (guarded by mu)

	kick     chan struct{} // asks Run to renew now
	renewals atomic.Int64
	failures atomic.Int64
}

// New checks the configuration and obtains the first token, so that wrong
// credentials, an unreachable Keystone or a missing endpoint are reported
// at once. Call Run to keep the token fresh.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Keeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.RenewMargin <= 0 {
		cfg.RenewMargin = 5 * time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Keeper{cfg: cfg, log: log, now: time.Now, kick: make(chan struct{}, 1)}
	k.iss = &passwordIssuer{cfg: cfg, now: k.now}
	c, err := k.iss.issue(ctx)
	if err != nil {
		return nil, err
	}
	c.Gen = 1
	k.cur.Store(c)
	log.Debug("keystone token obtained", "user", cfg.Username, "project", cfg.ProjectName,
		"storage_url", c.StorageURL, "lifetime", c.Lifetime.Round(time.Second))
	return k, nil
}

// Current returns the credential in use.
func (k *Keeper) Current() *Credential { return k.cur.Load() }

// Renewals is the number of successful renewals so far.
func (k *Keeper) Renewals() int64 { return k.renewals.Load() }

// Invalidate reports that Swift rejected the token of generation gen. It
// renews once for all callers: if the token already changed since gen, it
// returns the newer one without asking Keystone.
func (k *Keeper) Invalidate(ctx context.Context, gen uint64) (*Credential, error) {
	return k.renew(ctx, gen, "rejected by Swift")
}

// renew obtains a new token unless the current one is newer than gen.
// Concurrent calls share one request to Keystone.
func (k *Keeper) renew(ctx context.Context, gen uint64, why string) (*Credential, error) {
	for {
		if c := k.cur.Load(); c.Gen > gen {
			return c, nil
		}
		k.mu.Lock()
		if ch := k.inflight; ch != nil {
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
			continue
		}
		ch := make(chan struct{})
		k.inflight = ch
		k.mu.Unlock()

		// The renewal serves every waiter: it must not die with one
		// caller's request.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.cfg.Timeout)
		c, err := k.iss.issue(rctx)
		cancel()
		k.mu.Lock()
		k.lastErr = err
		if err == nil {
			old := k.cur.Load()
			c.Gen = old.Gen + 1
			k.cur.Store(c)
			k.renewals.Add(1)
		} else {
			k.failures.Add(1)
		}
		k.inflight = nil
		k.mu.Unlock()
		close(ch)
		if err != nil {
			k.log.Warn("token renewal failed", "why", why, "err", err)
			return nil, err
		}
		k.log.Info("keystone token renewed", "why", why, "lifetime", c.Lifetime.Round(time.Second), "renewals", k.renewals.Load())
		return c, nil
	}
}

// renewAt is when the keeper renews c: well before expiry, with jitter so
// that many mounts do not renew at the same instant.
func (k *Keeper) renewAt(c *Credential) time.Time {
	l := c.Lifetime
	margin := max(k.cfg.RenewMargin, l/10)
	if margin > l/2 {
		margin = l / 2
	}
	jitter := time.Duration(0)
	if l > 20 {
		jitter = time.Duration(rand.Int64N(int64(l / 20)))
	}
	return c.Expires.Add(-margin - jitter)
}

// Run renews the token before it expires until ctx is done. On errors it
// retries with backoff (1 s doubling to 1 min, with jitter) and keeps the
// current token in use meanwhile.
func (k *Keeper) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	for {
		c := k.cur.Load()
		wait := k.renewAt(c).Sub(k.now())
		if backoff > 0 {
			wait = backoff
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-k.kick:
		case <-t.C:
		}
		t.Stop()
		if _, err := k.renew(ctx, c.Gen, "scheduled"); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			left := k.cur.Load().Expires.Sub(k.now())
			backoff = min(max(2*backoff, time.Second), time.Minute)
			backoff = backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
			lvl := slog.LevelWarn
			if left < time.Minute {
				lvl = slog.LevelError
			}
			k.log.Log(ctx, lvl, "keystone unreachable or refusing; still using the current token",
				"token_expires_in", left.Round(time.Second), "retry_in", backoff.Round(time.Millisecond), "err", err)
			continue
		}
		backoff = 0
	}
}

// passwordIssuer authenticates with a user's password, project-scoped.
type passwordIssuer struct {
	cfg Config
	now func() time.Time
}

func (p *passwordIssuer) issue(ctx context.Context) (*Credential, error) {
	opts := &gophercloud.AuthOptions{
		IdentityEndpoint: p.cfg.AuthURL,
		Username:         p.cfg.Username,
		UserID:           p.cfg.UserID,
		Password:         string(p.cfg.Password),
		DomainName:       p.cfg.UserDomainName,
		DomainID:         p.cfg.UserDomainID,
		Scope: &gophercloud.AuthScope{
			ProjectName: p.cfg.ProjectName,
			ProjectID:   p.cfg.ProjectID,
			DomainName:  firstOf(p.cfg.ProjectDomainName, p.cfg.UserDomainName),
			DomainID:    firstOf(p.cfg.ProjectDomainID, p.cfg.UserDomainID),
		},
	}
	if opts.Scope.DomainID != "" {
		opts.Scope.DomainName = ""
	}
	return createToken(ctx, p.cfg, opts, p.now)
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// identityClient is a gophercloud client for Keystone v3 with timeouts.
func identityClient(cfg Config) (*gophercloud.ProviderClient, *gophercloud.ServiceClient, error) {
	pc, err := openstack.NewClient(cfg.AuthURL)
	if err != nil {
		return nil, nil, fmt.Errorf("OS_AUTH_URL %q: %w", cfg.AuthURL, err)
	}
	pc.HTTPClient = http.Client{Timeout: cfg.Timeout, Transport: keystoneTransport()}
	id, err := openstack.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	if err != nil {
		return nil, nil, fmt.Errorf("OS_AUTH_URL %q: %w", cfg.AuthURL, err)
	}
	return pc, id, nil
}

func keystoneTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	return t
}

// createToken POSTs /v3/auth/tokens and builds the Credential.
func createToken(ctx context.Context, cfg Config, opts tokens.AuthOptionsBuilder, now func() time.Time) (*Credential, error) {
	pc, id, err := identityClient(cfg)
	if err != nil {
		return nil, err
	}
	sent := now()
	r := tokens.Create(ctx, id, opts)
	if r.Err != nil {
		return nil, keystoneErr(cfg.AuthURL, r.Err)
	}
	tokID, err := r.ExtractTokenID()
	if err != nil {
		return nil, fmt.Errorf("keystone answer: %w", err)
	}
	var body struct {
		IssuedAt  time.Time `json:"issued_at"`
		ExpiresAt time.Time `json:"expires_at"`
		Project   struct {
			ID string `json:"id"`
		} `json:"project"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if err := r.ExtractInto(&body); err != nil {
		return nil, fmt.Errorf("keystone answer: %w", err)
	}
	c := &Credential{Token: Secret(tokID), ProjectID: body.Project.ID, UserID: body.User.ID}
	c.Lifetime = body.ExpiresAt.Sub(body.IssuedAt)
	if body.IssuedAt.IsZero() || c.Lifetime <= 0 {
		c.Lifetime = time.Until(body.ExpiresAt)
	}
	c.Issued = sent
	c.Expires = sent.Add(c.Lifetime)
	if cfg.StorageURL != "" {
		c.StorageURL = strings.TrimSuffix(cfg.StorageURL, "/")
		return c, nil
	}
	catalog, err := r.ExtractServiceCatalog()
	if err != nil {
		return nil, fmt.Errorf("keystone answer: %w", err)
	}
	avail := gophercloud.Availability(strings.TrimSuffix(firstOf(cfg.Interface, "public"), "URL"))
	u, err := openstack.V3Endpoint(ctx, pc, catalog, gophercloud.EndpointOpts{Type: "object-store", Region: cfg.Region, Availability: avail})
	if err != nil {
		where := fmt.Sprintf("interface %s", avail)
		if cfg.Region != "" {
			where += ", region " + cfg.Region
		}
		return nil, fmt.Errorf("%w (%s): check OS_REGION_NAME and OS_INTERFACE, or give the storage URL", ErrNoEndpoint, where)
	}
	c.StorageURL = strings.TrimSuffix(u, "/")
	return c, nil
}

// keystoneErr turns a gophercloud error into one an operator can act on.
func keystoneErr(authURL string, err error) error {
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		switch code.Actual {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w (HTTP 401 from %s): check the user name, password and domains (OS_USERNAME, OS_PASSWORD, OS_USER_DOMAIN_NAME, OS_PROJECT_NAME)", ErrCredentials, authURL)
		case http.StatusForbidden:
			return fmt.Errorf("%w (HTTP 403 from %s): the user has no role on the project", ErrCredentials, authURL)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %s answered 404: is OS_AUTH_URL the Keystone v3 endpoint (ending in /v3)?", ErrUnreachable, authURL)
		}
		return fmt.Errorf("keystone at %s answered HTTP %d", authURL, code.Actual)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w at %s: %v", ErrUnreachable, authURL, stripURLError(err))
}

// stripURLError keeps the cause of a transport error, without the
// request line that url.Error adds.
func stripURLError(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		var ne *net.OpError
		if errors.As(err, &ne) {
			return ne
		}
		err = u
	}
}

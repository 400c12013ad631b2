package auth

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// token is one Keystone token as the keeper needs it.
type token struct {
	id        Secret
	sent      time.Time // local clock: when the request for it went out
	issuedAt  time.Time // Keystone's clock
	expiresAt time.Time // Keystone's clock
	projectID string
	userID    string
	names     [2]string // the project's and the user's, for messages
	roles     []string
	appCredID string // the application credential it was made from
	trustID   string
	catalog   *tokens.ServiceCatalog
}

// lifetime is expires_at − issued_at: both on Keystone's clock, so the
// difference is right whatever the skew between the hosts.
func (t *token) lifetime() time.Duration {
	if t.issuedAt.IsZero() {
		return time.Until(t.expiresAt)
	}
	return t.expiresAt.Sub(t.issuedAt)
}

// local converts a time on Keystone's clock to the local clock, taking
// issued_at as "now" on Keystone's clock when the request was sent (it is
// later by the request's latency: the conversion errs on the early side).
func (t *token) local(ks time.Time) time.Time {
	if t.issuedAt.IsZero() {
		return ks
	}
	return t.sent.Add(ks.Sub(t.issuedAt))
}

// hasRole reports whether the token carries role name.
func (t *token) hasRole(name string) bool {
	for _, r := range t.roles {
		if strings.EqualFold(r, name) {
			return true
		}
	}
	return false
}

// tokenBody is the part of Keystone's token document the keeper reads.
type tokenBody struct {
	IssuedAt  ksTime `json:"issued_at"`
	ExpiresAt ksTime `json:"expires_at"`
	Project   struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"project"`
	User struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"user"`
	Roles []struct {
		Name string `json:"name"`
	} `json:"roles"`
	AppCred struct {
		ID string `json:"id"`
	} `json:"application_credential"`
	Trust struct {
		ID string `json:"id"`
	} `json:"OS-TRUST:trust"`
}

// ksTime parses Keystone's timestamps, which come with or without a zone
// ("2026-11-23T19:22:57.000000" for an application credential's
// expires_at, "...Z" for tokens). Without a zone they are UTC.
type ksTime struct{ time.Time }

func (t *ksTime) UnmarshalJSON(b []byte) error {
	var s *string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("keystone time %s: not a string", clip(string(b)))
	}
	if s == nil || *s == "" {
		return nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02T15:04:05"} {
		if v, err := time.Parse(layout, *s); err == nil {
			t.Time = v.UTC()
			return nil
		}
	}
	return fmt.Errorf("keystone time %s: unknown format", clip(*s))
}

// maxTokenLifetime is the longest token lifetime believed: Keystone's
// default is an hour, deployments stretch it to days. A token said to live
// longer (expires_at in year 9999) is a bad answer, not a reason never to
// renew.
const maxTokenLifetime = 366 * 24 * time.Hour

// fill copies the token document into t. expires_at must be there; with
// issued_at, it must come after it by at most maxTokenLifetime (both are
// on Keystone's clock). Without issued_at, the local clock is all there
// is: expires_at may be past (an expired user token read with
// allow_expired), but not further ahead than maxTokenLifetime.
func (b *tokenBody) fill(t *token, now time.Time) error {
	iss, exp := b.IssuedAt.Time, b.ExpiresAt.Time
	switch {
	case exp.IsZero():
		return fmt.Errorf("%w: token without expires_at", errBadAnswer)
	case !iss.IsZero() && !exp.After(iss):
		return fmt.Errorf("%w: token expires_at %s is not after its issued_at %s", errBadAnswer, ksFormat(exp), ksFormat(iss))
	case !iss.IsZero() && exp.Sub(iss) > maxTokenLifetime:
		return fmt.Errorf("%w: token expires_at %s is more than %v after its issued_at %s", errBadAnswer, ksFormat(exp), maxTokenLifetime, ksFormat(iss))
	case iss.IsZero() && exp.Sub(now) > maxTokenLifetime:
		return fmt.Errorf("%w: token expires_at %s is more than %v ahead", errBadAnswer, ksFormat(exp), maxTokenLifetime)
	}
	t.issuedAt, t.expiresAt = iss, exp
	t.projectID, t.userID = b.Project.ID, b.User.ID
	t.names = [2]string{b.Project.Name, b.User.Name}
	t.appCredID, t.trustID = b.AppCred.ID, b.Trust.ID
	for _, r := range b.Roles {
		t.roles = append(t.roles, r.Name)
	}
	return nil
}

func ksFormat(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// clip cuts a piece of an answer to a length a message can carry.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// errBadAnswer: Keystone answered something the keeper cannot read.
var errBadAnswer = errors.New("unexpected answer")

// keystone is a client of one Keystone.
type keystone struct {
	authURL string
	timeout time.Duration
	tls     *tls.Config // nil: Go's defaults
}

// keystone is a client of the Keystone at authURL with c's settings.
func (c Config) keystone(authURL string) keystone {
	return keystone{authURL: authURL, timeout: c.Timeout, tls: c.TLS}
}

// client returns a gophercloud identity v3 client with timeouts.
func (ks keystone) client() (*gophercloud.ProviderClient, *gophercloud.ServiceClient, error) {
	pc, err := openstack.NewClient(ks.authURL)
	if err != nil {
		return nil, nil, fmt.Errorf("OS_AUTH_URL %q: %w", ks.authURL, err)
	}
	pc.HTTPClient = http.Client{Timeout: ks.timeout, Transport: keystoneTransport(ks.tls), CheckRedirect: keystoneRedirect}
	id, err := openstack.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	if err != nil {
		return nil, nil, fmt.Errorf("OS_AUTH_URL %q: %w", ks.authURL, err)
	}
	return pc, id, nil
}

// keystoneRedirect follows Keystone's redirects on its own host only. Go
// would resend X-Auth-Token and X-Subject-Token to any host (it drops only
// Authorization and Cookie), and a 307 the password in the body.
func keystoneRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if from := via[0].URL; !sameOrigin(req.URL, from.Scheme+"://"+from.Host) {
		return &foreignRedirect{to: req.URL.Scheme + "://" + req.URL.Host}
	}
	return nil
}

// foreignRedirect is Keystone redirecting to another host, not followed.
type foreignRedirect struct{ to string }

func (e *foreignRedirect) Error() string {
	return "redirected to " + e.to + ", another host: not followed, the credentials go to OS_AUTH_URL's host only (set OS_AUTH_URL to the URL Keystone answers on)"
}

func keystoneTransport(tc *tls.Config) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		t.TLSClientConfig = tc.Clone()
	}
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	return t
}

// create POSTs /v3/auth/tokens. The error is gophercloud's, for the
// caller to explain (keystoneErr).
func (ks keystone) create(ctx context.Context, opts tokens.AuthOptionsBuilder) (*token, error) {
	_, id, err := ks.client()
	if err != nil {
		return nil, err
	}
	t := &token{sent: time.Now()}
	r := tokens.Create(ctx, id, opts)
	if r.Err != nil {
		return nil, r.Err
	}
	if err := ks.read(r.Result, t); err != nil {
		return nil, err
	}
	if t.lifetime() <= 0 {
		// Only without issued_at (fill checked the rest): renewing a
		// token that is already dead would be all the keeper did.
		return nil, fmt.Errorf("%w: the new token's expires_at %s has passed already", errBadAnswer, ksFormat(t.expiresAt))
	}
	tokID, err := r.ExtractTokenID()
	if err != nil || tokID == "" {
		return nil, fmt.Errorf("%w: no X-Subject-Token (%v)", errBadAnswer, err)
	}
	t.id = Secret(tokID)
	return t, nil
}

// get reads another token (GET /v3/auth/tokens?allow_expired=1) with the
// authority of auth: the service user may validate user tokens, and
// allow_expired lets a daemon restarted after the user token expired
// still learn its project and expiry.
func (ks keystone) get(ctx context.Context, auth, subject Secret) (*token, error) {
	pc, id, err := ks.client()
	if err != nil {
		return nil, err
	}
	pc.SetToken(string(auth))
	var r tokens.GetResult
	resp, err := id.Get(ctx, id.ServiceURL("auth", "tokens")+"?allow_expired=1", &r.Body, &gophercloud.RequestOpts{
		MoreHeaders: map[string]string{"X-Subject-Token": string(subject)},
		OkCodes:     []int{200, 203},
	})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	if r.Err != nil {
		return nil, r.Err
	}
	t := &token{id: subject}
	if err := ks.read(r.Result, t); err != nil {
		return nil, err
	}
	return t, nil
}

func (ks keystone) read(r gophercloud.Result, t *token) error {
	var body tokenBody
	if err := r.ExtractIntoStructPtr(&body, "token"); err != nil {
		return fmt.Errorf("%w: %v", errBadAnswer, err)
	}
	if err := body.fill(t, time.Now()); err != nil {
		return err
	}
	var cat tokens.ServiceCatalog
	if err := r.ExtractIntoStructPtr(&cat, "token"); err == nil && len(cat.Entries) > 0 {
		t.catalog = &cat
	}
	return nil
}

// isV3 reports whether the auth URL answers as a Keystone v3 endpoint:
// it tells a 404 about a credential from a 404 about the URL.
func (ks keystone) isV3(ctx context.Context) bool {
	_, id, err := ks.client()
	if err != nil {
		return false
	}
	var body struct {
		Version struct {
			ID string `json:"id"`
		} `json:"version"`
	}
	_, err = id.Get(ctx, id.ServiceURL(), &body, &gophercloud.RequestOpts{OmitHeaders: []string{"X-Auth-Token"}})
	return err == nil && strings.HasPrefix(body.Version.ID, "v3")
}

// appCredExpiry reads an application credential's own expires_at with a
// token made from it (Keystone lets the owner read it; a restricted
// credential may not create or delete others, but may read itself). Zero
// if it does not expire.
func (ks keystone) appCredExpiry(ctx context.Context, t *token) (time.Time, error) {
	pc, id, err := ks.client()
	if err != nil {
		return time.Time{}, err
	}
	pc.SetToken(string(t.id))
	var body struct {
		AC struct {
			ExpiresAt *ksTime `json:"expires_at"`
		} `json:"application_credential"`
	}
	_, err = id.Get(ctx, id.ServiceURL("users", t.userID, "application_credentials", t.appCredID), &body, nil)
	if err != nil || body.AC.ExpiresAt == nil {
		return time.Time{}, err
	}
	return body.AC.ExpiresAt.Time, nil
}

// passwordOptions authenticates id with its password; scope is the
// project scope (nil: the id's project, if any).
func (id Identity) passwordOptions(authURL string, scope *gophercloud.AuthScope) *gophercloud.AuthOptions {
	o := &gophercloud.AuthOptions{
		IdentityEndpoint: authURL,
		Username:         id.Username,
		UserID:           id.UserID,
		Password:         string(id.Password),
		DomainName:       id.UserDomainName,
		DomainID:         id.UserDomainID,
		Scope:            scope,
	}
	if o.UserID != "" {
		o.Username, o.DomainName, o.DomainID = "", "", ""
	}
	if o.DomainID != "" {
		o.DomainName = ""
	}
	if scope == nil && (id.ProjectID != "" || id.ProjectName != "") {
		s := &gophercloud.AuthScope{ProjectID: id.ProjectID}
		if id.ProjectID == "" {
			s.ProjectName = id.ProjectName
			s.DomainID = firstOf(id.ProjectDomainID, id.UserDomainID)
			if s.DomainID == "" {
				s.DomainName = firstOf(id.ProjectDomainName, id.UserDomainName)
			}
		}
		o.Scope = s
	}
	return o
}

// appCredOptions authenticates with id's application credential. No
// scope: Keystone rejects one ("Application credentials cannot request a
// scope").
func (id Identity) appCredOptions(authURL string) *gophercloud.AuthOptions {
	o := &gophercloud.AuthOptions{
		IdentityEndpoint:            authURL,
		ApplicationCredentialID:     id.ApplicationCredentialID,
		ApplicationCredentialName:   id.ApplicationCredentialName,
		ApplicationCredentialSecret: string(id.ApplicationCredentialSecret),
	}
	if o.ApplicationCredentialID == "" {
		o.UserID, o.Username = id.UserID, id.Username
		o.DomainID, o.DomainName = id.UserDomainID, id.UserDomainName
	}
	return o
}

// options authenticates id with whatever it has.
func (id Identity) options(authURL string) *gophercloud.AuthOptions {
	if id.isAppCred() {
		return id.appCredOptions(authURL)
	}
	return id.passwordOptions(authURL, nil)
}

// who names the identity for messages (never a secret).
func (id Identity) who() string {
	switch {
	case id.ApplicationCredentialID != "":
		return "application credential " + id.ApplicationCredentialID
	case id.ApplicationCredentialName != "":
		return "application credential " + id.ApplicationCredentialName
	case id.Username != "":
		return "user " + id.Username
	}
	return "user " + id.UserID
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// objectStoreURL finds the object-store endpoint in t's catalog (or takes
// the configured override), without a trailing slash: gophercloud adds
// one, ncw/swift would then make "//container".
func objectStoreURL(ctx context.Context, cfg Config, t *token) (string, error) {
	if cfg.StorageURL != "" {
		return strings.TrimSuffix(cfg.StorageURL, "/"), nil
	}
	avail := gophercloud.Availability(strings.TrimSuffix(firstOf(cfg.Interface, "public"), "URL"))
	where := fmt.Sprintf("interface %s", avail)
	if cfg.Region != "" {
		where += ", region " + cfg.Region
	}
	if t.catalog == nil {
		return "", fmt.Errorf("%w (the token has no catalog): give the storage URL (--os-storage-url)", ErrNoEndpoint)
	}
	pc, err := openstack.NewClient(cfg.AuthURL)
	if err != nil {
		return "", err
	}
	u, err := openstack.V3Endpoint(ctx, pc, t.catalog, gophercloud.EndpointOpts{Type: "object-store", Region: cfg.Region, Availability: avail})
	if err != nil {
		return "", fmt.Errorf("%w (%s): check OS_REGION_NAME and OS_INTERFACE, or give the storage URL (--os-storage-url)", ErrNoEndpoint, where)
	}
	return strings.TrimSuffix(u, "/"), nil
}

// resellerURL turns the object-store URL of a project's own account
// (".../v1/AUTH_<project>") into the URL of the same project's account
// under another reseller prefix (".../v1/IMAGE_<project>"). It parses the
// URL and replaces only the last path segment, which must end with the
// project id (Keystone's endpoint template is .../AUTH_%(project_id)s).
func resellerURL(storageURL, prefix, projectID string) (string, error) {
	u, err := url.Parse(storageURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("object-store URL %q is not a URL", storageURL)
	}
	p := strings.TrimSuffix(u.Path, "/")
	i := strings.LastIndex(p, "/")
	if i < 0 || projectID == "" {
		return "", fmt.Errorf("object-store URL %q has no account to replace", storageURL)
	}
	last := p[i+1:]
	if !strings.HasSuffix(last, projectID) || len(last) == len(projectID) {
		return "", fmt.Errorf("object-store URL %q does not end in <prefix>%s (the user token's project): give --os-storage-url", storageURL, projectID)
	}
	u.Path = p[:i+1] + prefix + projectID
	u.RawPath = ""
	return u.String(), nil
}

// keystoneErr turns a gophercloud error into one an operator can act on;
// hint says which settings to check after a 401.
func keystoneErr(authURL, hint string, err error) error {
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		switch code.Actual {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w (HTTP 401 from %s): %s", ErrCredentials, authURL, hint)
		case http.StatusForbidden:
			return fmt.Errorf("%w (HTTP 403 from %s): the user has no role on the project", ErrCredentials, authURL)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %s answered 404: is OS_AUTH_URL the Keystone v3 endpoint (ending in /v3)?", ErrUnreachable, authURL)
		}
		if code.Actual >= 500 {
			return fmt.Errorf("%w: %s answered HTTP %d", ErrUnreachable, authURL, code.Actual)
		}
		return fmt.Errorf("keystone at %s answered HTTP %d", authURL, code.Actual)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, errBadAnswer) {
		return fmt.Errorf("keystone at %s: %w", authURL, err)
	}
	if hint := TLSProblem(err); hint != "" {
		return fmt.Errorf("%w at %s: %v: %s", ErrUnreachable, authURL, stripURLError(err), hint)
	}
	return fmt.Errorf("%w at %s: %v", ErrUnreachable, authURL, stripURLError(err))
}

// statusOf is the HTTP status of a gophercloud error, or 0.
func statusOf(err error) int {
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		return code.Actual
	}
	return 0
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

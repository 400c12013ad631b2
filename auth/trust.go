package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/trusts"
)

// TrustRequest says who delegates what to whom (imagefs trust create).
type TrustRequest struct {
	AuthURL string
	// The trustor: a project-scoped token of the user (Token, used once),
	// or the user's credentials.
	Token   Secret
	Trustor Identity
	// The trustee: TrusteeUserID, or the service user's credentials, with
	// which CreateTrust learns its id.
	TrusteeUserID  string
	Trustee        Identity
	TrusteeAuthURL string // empty: AuthURL
	// Roles to delegate; empty: all the trustor's roles on the project.
	Roles []string
	// ExpiresAt ends the trust; zero: it does not expire.
	ExpiresAt time.Time
	Timeout   time.Duration // per Keystone request; default 30 s
	TLS       *tls.Config   // nil: the system's CAs
}

// keystone is a client of the Keystone at authURL with r's settings.
func (r TrustRequest) keystone(authURL string) keystone {
	return keystone{authURL: authURL, timeout: r.Timeout, tls: r.TLS}
}

// Trust is a trust that was created.
type Trust struct {
	ID            string
	TrustorUserID string
	TrusteeUserID string
	ProjectID     string
	Roles         []string
	ExpiresAt     time.Time // zero: never
}

// CreateTrust creates a trust by which the trustor delegates their roles
// on their project to the service user, with impersonation (the trustee's
// tokens act as the trustor, as Glance's multi-tenant store does). It uses
// the trustor's token for this one call only.
func CreateTrust(ctx context.Context, r TrustRequest) (*Trust, error) {
	if r.Timeout <= 0 {
		r.Timeout = 30 * time.Second
	}
	if r.TrusteeAuthURL == "" {
		r.TrusteeAuthURL = r.AuthURL
	}
	ks := r.keystone(r.AuthURL)
	trustor, err := r.trustorToken(ctx, ks)
	if err != nil {
		return nil, err
	}
	if trustor.projectID == "" {
		return nil, errors.New("the trustor's token is not scoped to a project: set OS_PROJECT_NAME (and OS_PROJECT_DOMAIN_NAME), or issue a project-scoped token")
	}
	if trustor.trustID != "" {
		return nil, errors.New("the trustor's token is itself trust-scoped: Keystone does not let trusts be created from it; use the user's own token or credentials")
	}
	trustee := firstOf(r.TrusteeUserID, r.Trustee.UserID)
	if trustee == "" {
		if r.Trustee == (Identity{}) {
			return nil, errors.New("no trustee: give the service user (IMAGEFS_SERVICE_USERNAME, IMAGEFS_SERVICE_PASSWORD, IMAGEFS_SERVICE_USER_DOMAIN_NAME) or --trustee-user-id")
		}
		tks := r.keystone(r.TrusteeAuthURL)
		svc := r.Trustee
		svc.ProjectName, svc.ProjectID = "", "" // only its id is needed
		t, err := tks.create(ctx, svc.options(tks.authURL))
		if err != nil {
			return nil, keystoneErr(tks.authURL, fmt.Sprintf("the trustee (service %s) cannot log in: check IMAGEFS_SERVICE_USERNAME, IMAGEFS_SERVICE_PASSWORD and IMAGEFS_SERVICE_USER_DOMAIN_NAME", svc.who()), err)
		}
		trustee = t.userID
	}
	roles := r.Roles
	if len(roles) == 0 {
		roles = trustor.roles
	}
	if len(roles) == 0 {
		return nil, errors.New("the trustor has no role on the project to delegate")
	}
	opts := trusts.CreateOpts{TrustorUserID: trustor.userID, TrusteeUserID: trustee, ProjectID: trustor.projectID, Impersonation: true}
	for _, name := range roles {
		opts.Roles = append(opts.Roles, trusts.Role{Name: name})
	}
	if !r.ExpiresAt.IsZero() {
		e := r.ExpiresAt.UTC()
		opts.ExpiresAt = &e
	}
	pc, id, err := ks.client()
	if err != nil {
		return nil, err
	}
	pc.SetToken(string(trustor.id))
	tr, err := trusts.Create(ctx, id, opts).Extract()
	if err != nil {
		if statusOf(err) == http.StatusForbidden {
			return nil, fmt.Errorf("Keystone refused to create the trust (HTTP 403 from %s): the token must be the trustor's own, not made from a restricted application credential, and hold the delegated roles (%v)", r.AuthURL, roles)
		}
		return nil, fmt.Errorf("create trust: %w", keystoneErr(r.AuthURL, "the trustor's token or credentials are not valid", err))
	}
	out := &Trust{ID: tr.ID, TrustorUserID: trustor.userID, TrusteeUserID: trustee, ProjectID: trustor.projectID, Roles: roles}
	if !tr.ExpiresAt.IsZero() {
		out.ExpiresAt = tr.ExpiresAt
	}
	return out, nil
}

// DeleteTrust deletes a trust with the trustor's token or credentials.
func DeleteTrust(ctx context.Context, r TrustRequest, trustID string) error {
	if r.Timeout <= 0 {
		r.Timeout = 30 * time.Second
	}
	ks := r.keystone(r.AuthURL)
	trustor, err := r.trustorToken(ctx, ks)
	if err != nil {
		return err
	}
	pc, id, err := ks.client()
	if err != nil {
		return err
	}
	pc.SetToken(string(trustor.id))
	if err := trusts.Delete(ctx, id, trustID).ExtractErr(); err != nil {
		if statusOf(err) == http.StatusNotFound {
			return fmt.Errorf("trust %s does not exist", trustID)
		}
		return fmt.Errorf("delete trust %s: %w", trustID, keystoneErr(r.AuthURL, "the trustor's token or credentials are not valid", err))
	}
	return nil
}

// trustorToken reads the given token (once) or logs the trustor in.
func (r TrustRequest) trustorToken(ctx context.Context, ks keystone) (*token, error) {
	if r.Token != "" {
		t, err := ks.get(ctx, r.Token, r.Token)
		if err != nil {
			return nil, keystoneErr(ks.authURL, "the user token (OS_TOKEN) is not valid or has expired: issue a new one (openstack token issue)", err)
		}
		if !time.Now().Before(t.expiresAt) {
			return nil, fmt.Errorf("%w: the user token (OS_TOKEN) expired at %s: issue a new one (openstack token issue)", ErrExpired, t.expiresAt.UTC().Format(time.RFC3339))
		}
		return t, nil
	}
	if r.Trustor == (Identity{}) {
		return nil, errors.New("no trustor: set OS_TOKEN to the user's token, or the user's credentials (OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME and domains)")
	}
	t, err := ks.create(ctx, r.Trustor.options(ks.authURL))
	if err != nil {
		return nil, keystoneErr(ks.authURL, "check the trustor's credentials (OS_USERNAME, OS_PASSWORD, OS_USER_DOMAIN_NAME, OS_PROJECT_NAME)", err)
	}
	return t, nil
}

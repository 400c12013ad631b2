package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// credential builds the Credential of token t (storage URL aside).
func credential(t *token) *Credential {
	l := t.lifetime()
	return &Credential{Token: t.id, ProjectID: t.projectID, UserID: t.userID, ProjectName: t.names[0], UserName: t.names[1],
		Lifetime: l, Issued: t.sent, Expires: t.sent.Add(l)}
}

// passwordIssuer: a user's password, project-scoped.
type passwordIssuer struct{ cfg Config }

func (p *passwordIssuer) issue(ctx context.Context, _ *Credential) (*Credential, error) {
	ks := p.cfg.keystone(p.cfg.AuthURL)
	t, err := ks.create(ctx, p.cfg.Identity.passwordOptions(p.cfg.AuthURL, nil))
	if err != nil {
		return nil, keystoneErr(p.cfg.AuthURL, "check the user name, password and domains (OS_USERNAME, OS_PASSWORD, OS_USER_DOMAIN_NAME, OS_PROJECT_NAME)", err)
	}
	c := credential(t)
	if c.StorageURL, err = objectStoreURL(ctx, p.cfg, t); err != nil {
		return nil, err
	}
	return c, nil
}

// appCredIssuer: an application credential. Keystone caps its tokens at
// the credential's own expires_at, which the issuer reads once and keeps
// as the hard deadline.
type appCredIssuer struct {
	cfg Config
	// reread makes the next issue read the credential's expiry again
	// (set by Reload: a new secret may be a new credential).
	reread atomic.Bool
}

func (a *appCredIssuer) issue(ctx context.Context, prev *Credential) (*Credential, error) {
	ks := a.cfg.keystone(a.cfg.AuthURL)
	t, err := ks.create(ctx, a.cfg.Identity.appCredOptions(a.cfg.AuthURL))
	if err != nil {
		if prev != nil && !prev.HardDeadline.IsZero() && !time.Now().Before(prev.HardDeadline) && statusOf(err) == http.StatusUnauthorized {
			return nil, fmt.Errorf("%w: %s expired at %s: create a new one (openstack application credential create) and restart imagefs with it",
				ErrExpired, a.cfg.Identity.who(), prev.HardDeadline.UTC().Format(time.RFC3339))
		}
		name := firstOf(a.cfg.ApplicationCredentialID, a.cfg.ApplicationCredentialName)
		if statusOf(err) == http.StatusNotFound && ks.isV3(ctx) {
			// Keystone answers 404 for a credential it does not know.
			return nil, fmt.Errorf("%w: Keystone at %s does not know the application credential %s (HTTP 404): check OS_APPLICATION_CREDENTIAL_ID/_NAME; it may have been deleted: create a new one (openstack application credential create)",
				ErrCredentials, a.cfg.AuthURL, name)
		}
		return nil, keystoneErr(a.cfg.AuthURL, fmt.Sprintf("the application credential %s is wrong (OS_APPLICATION_CREDENTIAL_ID/_NAME, OS_APPLICATION_CREDENTIAL_SECRET), deleted, or expired: check it with 'openstack application credential show %s' and create a new one if needed", name, name), err)
	}
	c := credential(t)
	if c.StorageURL, err = objectStoreURL(ctx, a.cfg, t); err != nil {
		return nil, err
	}
	if prev != nil && !a.reread.Swap(false) {
		c.HardDeadline = prev.HardDeadline
	} else if t.appCredID != "" {
		// Best effort: without it the keeper still works, it just cannot
		// warn before the credential expires.
		if exp, err := ks.appCredExpiry(ctx, t); err == nil && !exp.IsZero() {
			c.HardDeadline = t.local(exp)
		}
	}
	// Keystone caps the token at the credential's expiry: such a token
	// cannot be outlived by renewing.
	c.Final = !c.HardDeadline.IsZero() && !c.Expires.Before(c.HardDeadline.Add(-2*time.Second))
	return c, nil
}

// trustIssuer: the service user (trustee) with its password and the trust
// id. Keystone does not let a trust-scoped token make another token, so
// every renewal authenticates the trustee again; the trustor is never
// involved.
type trustIssuer struct{ cfg Config }

func (tr *trustIssuer) issue(ctx context.Context, _ *Credential) (*Credential, error) {
	ks := tr.cfg.keystone(tr.cfg.ServiceAuthURL)
	t, err := ks.create(ctx, tr.cfg.Service.passwordOptions(ks.authURL, &gophercloud.AuthScope{TrustID: tr.cfg.TrustID}))
	if err != nil {
		return nil, tr.explain(ctx, ks, err)
	}
	c := credential(t)
	if c.StorageURL, err = objectStoreURL(ctx, tr.cfg, t); err != nil {
		return nil, err
	}
	return c, nil
}

// explain tells a trust that is gone from a trustee whose password is
// wrong: Keystone answers 401 to both. The trustee authenticating without
// the trust settles it.
func (tr *trustIssuer) explain(ctx context.Context, ks keystone, err error) error {
	st := statusOf(err)
	if st != http.StatusUnauthorized && st != http.StatusForbidden && st != http.StatusNotFound {
		return keystoneErr(ks.authURL, "", err)
	}
	svc := tr.cfg.Service
	svc.ProjectName, svc.ProjectID = "", "" // unscoped: only the password is checked
	if _, err2 := ks.create(ctx, svc.passwordOptions(ks.authURL, nil)); err2 != nil {
		if statusOf(err2) == http.StatusUnauthorized {
			vars := "IMAGEFS_SERVICE_USERNAME, IMAGEFS_SERVICE_PASSWORD, IMAGEFS_SERVICE_USER_DOMAIN_NAME"
			if tr.cfg.trusteeFromOS {
				vars = "OS_USERNAME, OS_PASSWORD, OS_USER_DOMAIN_NAME"
			}
			return keystoneErr(ks.authURL, fmt.Sprintf("the trustee (%s) cannot log in: check its name, password and domain (%s)", svc.who(), vars), err2)
		}
		return keystoneErr(ks.authURL, "", err2)
	}
	return fmt.Errorf("%w: the trust %s does not exist (deleted or expired), or was not made for %s, or its trustor lost the roles it delegates (HTTP %d from %s): create a new trust with 'imagefs trust create' and set OS_TRUST_ID",
		ErrCredentials, tr.cfg.TrustID, svc.who(), st, ks.authURL)
}

// serviceTokenIssuer: the user's token (OS_TOKEN) goes out unchanged; the
// issuer renews only the service user's token. The first time, it reads
// the user token with the service token (allow_expired, so a restart after
// the user token's expiry still works) for its project, expiry and
// catalog.
type serviceTokenIssuer struct {
	cfg Config
	log *slog.Logger
}

func (s *serviceTokenIssuer) issue(ctx context.Context, prev *Credential) (*Credential, error) {
	sks := s.cfg.keystone(s.cfg.ServiceAuthURL)
	svc, err := sks.create(ctx, s.cfg.Service.options(sks.authURL))
	if err != nil {
		return nil, keystoneErr(sks.authURL, fmt.Sprintf("check the service user's credentials (service %s: IMAGEFS_SERVICE_USERNAME, IMAGEFS_SERVICE_PASSWORD, IMAGEFS_SERVICE_PROJECT_NAME and domains, or IMAGEFS_SERVICE_APPLICATION_CREDENTIAL_*)", s.cfg.Service.who()), err)
	}
	c := credential(svc)
	c.ServiceToken, c.Token = svc.id, s.cfg.Token
	if prev != nil {
		c.StorageURL, c.ProjectID, c.UserID = prev.StorageURL, prev.ProjectID, prev.UserID
		c.ProjectName, c.UserName = prev.ProjectName, prev.UserName
		c.UserExpires, c.HardDeadline = prev.UserExpires, prev.HardDeadline
		return c, nil
	}
	if !svc.hasRole("service") && s.log != nil {
		// Debug: Swift's service_token_roles may name another role; if it
		// refuses the token, the mount's check explains.
		s.log.Debug("the service user's token has no 'service' role",
			"service_user", s.cfg.Service.who(), "roles", strings.Join(svc.roles, ","))
	}
	ks := s.cfg.keystone(s.cfg.AuthURL)
	user, err := ks.get(ctx, svc.id, s.cfg.Token)
	if err != nil {
		switch statusOf(err) {
		case http.StatusNotFound, http.StatusUnauthorized:
			return nil, fmt.Errorf("%w: the user token (OS_TOKEN) is not valid: it is malformed, was revoked, or expired more than Keystone's allow_expired_window ago: get a new one (openstack token issue)", ErrCredentials)
		case http.StatusForbidden:
			return nil, fmt.Errorf("%w: the service user (%s) may not validate user tokens: give it the 'service' role", ErrCredentials, s.cfg.Service.who())
		}
		return nil, keystoneErr(s.cfg.AuthURL, "", err)
	}
	if user.projectID == "" {
		return nil, errors.New("the user token (OS_TOKEN) is not scoped to a project: issue a project-scoped token (openstack token issue with OS_PROJECT_NAME set)")
	}
	u, err := objectStoreURL(ctx, s.cfg, user)
	if err != nil {
		return nil, err
	}
	if c.StorageURL, err = resellerURL(u, s.cfg.ResellerPrefix, user.projectID); err != nil {
		return nil, err
	}
	c.ProjectID, c.UserID = user.projectID, user.userID
	c.ProjectName, c.UserName = user.names[0], user.names[1]
	// The user token's expires_at is on Keystone's clock: the service
	// token just issued tells the offset.
	c.UserExpires = svc.local(user.expiresAt)
	c.HardDeadline = c.UserExpires.Add(s.cfg.AllowExpiredWindow)
	if !time.Now().Before(c.HardDeadline) {
		return nil, fmt.Errorf("%w: the user token (OS_TOKEN) expired at %s, more than the allow-expired window (%v) ago: get a new one (openstack token issue)",
			ErrExpired, user.expiresAt.UTC().Format(time.RFC3339), s.cfg.AllowExpiredWindow)
	}
	return c, nil
}

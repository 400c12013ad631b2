package auth

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Mode is how the keeper obtains its tokens.
type Mode string

// The four auth modes.
const (
	// ModePassword: a user's password, scoped to a project. The account is
	// that project's AUTH_ account.
	ModePassword Mode = "password"
	// ModeAppCredential: an application credential (id + secret, or name +
	// secret + user). It carries its own project; no scope is sent.
	ModeAppCredential Mode = "application-credential"
	// ModeTrust: the service user (trustee) authenticates with its
	// password and a trust id, and acts on the trustor's project.
	ModeTrust Mode = "trust"
	// ModeServiceToken: a user's token in X-Auth-Token, the service user's
	// token in X-Service-Token, on the IMAGE_<project> account.
	ModeServiceToken Mode = "service-token"
)

// Modes lists the modes, for help texts and validation.
var Modes = []Mode{ModePassword, ModeAppCredential, ModeTrust, ModeServiceToken}

// Identity is a Keystone user and how it proves who it is: a password
// (with an optional project scope) or an application credential. Field
// comments name the OS_* variables of the primary identity.
type Identity struct {
	Username          string // OS_USERNAME
	UserID            string // OS_USER_ID
	Password          Secret // OS_PASSWORD
	UserDomainName    string // OS_USER_DOMAIN_NAME
	UserDomainID      string // OS_USER_DOMAIN_ID
	ProjectName       string // OS_PROJECT_NAME
	ProjectID         string // OS_PROJECT_ID
	ProjectDomainName string // OS_PROJECT_DOMAIN_NAME
	ProjectDomainID   string // OS_PROJECT_DOMAIN_ID

	ApplicationCredentialID     string // OS_APPLICATION_CREDENTIAL_ID
	ApplicationCredentialName   string // OS_APPLICATION_CREDENTIAL_NAME (needs the user)
	ApplicationCredentialSecret Secret // OS_APPLICATION_CREDENTIAL_SECRET
}

// isAppCred reports whether the identity is an application credential.
func (id Identity) isAppCred() bool {
	return id.ApplicationCredentialID != "" || id.ApplicationCredentialName != ""
}

// hasPassword reports whether any password-user field is set.
func (id Identity) hasPassword() bool { return id.Password != "" }

// Config says how to obtain Keystone tokens and where Swift is. The
// primary identity's fields follow the OS_* environment variables of the
// OpenStack CLI; Service follows Nova's [service_user] group.
type Config struct {
	// Mode is the auth mode; empty means InferMode.
	Mode Mode

	AuthURL string // OS_AUTH_URL, Keystone v3 (".../v3")

	// Identity is the user of password and application-credential modes,
	// and the trustee in trust mode when Service is not given (the
	// OpenStack CLI's convention with OS_TRUST_ID).
	Identity

	// TrustID is the trust of trust mode (OS_TRUST_ID).
	TrustID string
	// Token is the user's token of service-token mode (OS_TOKEN).
	Token Secret

	// Service is the service user: the trustee in trust mode, the owner of
	// X-Service-Token in service-token mode. It needs Keystone's service
	// role (Swift's service_token_roles) for service tokens. A password
	// user, or an application credential (service-token mode only:
	// application credentials cannot consume trusts).
	Service Identity
	// ServiceAuthURL is the Keystone of the service user; empty: AuthURL.
	ServiceAuthURL string

	Region    string // OS_REGION_NAME: the catalog region of the object-store endpoint
	Interface string // OS_INTERFACE: public (default), internal or admin
	// StorageURL, if set, replaces the catalog's object-store endpoint (in
	// service-token mode the reseller prefix is still swapped in).
	StorageURL string

	// ResellerPrefix is the account prefix of service-token mode: the
	// catalog's AUTH_<project> becomes <ResellerPrefix><project>. Default
	// IMAGE_.
	ResellerPrefix string
	// AllowExpiredWindow mirrors Keystone's [token] allow_expired_window:
	// how long after its expiry a user token is still accepted together
	// with a valid service token. Default 48 h.
	AllowExpiredWindow time.Duration
	// ExpiryWarning: the keeper warns when a hard deadline (an application
	// credential's expiry, the end of the allow-expired window) is this
	// close; for the allow-expired window, at most a quarter of it.
	// Default 7 days.
	ExpiryWarning time.Duration

	// TLS is the TLS configuration of the Keystone requests (the caller
	// gives Swift's transport the same, see TLSOptions); nil: Go's
	// defaults, with the system's CAs.
	TLS *tls.Config

	// Timeout bounds one request to Keystone. Default 30 s.
	Timeout time.Duration
	// RenewMargin is the least time before expiry at which the keeper
	// renews (it uses 10% of the lifetime when that is more, and half the
	// lifetime for short-lived tokens). Default 5 min.
	RenewMargin time.Duration
	// trusteeFromOS: in trust mode, the trustee is the OS_* user
	// (keystoneauth's convention), not IMAGEFS_SERVICE_* (set by
	// withDefaults, for messages).
	trusteeFromOS bool

	// MinRemaining: requests wait for a renewal rather than start with a
	// token this close to its expiry (a quarter of the lifetime, if that
	// is less). It covers the clock skew between Keystone and Swift.
	// Default 2 min.
	MinRemaining time.Duration
}

// withDefaults fills the zero durations and the derived fields.
func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = c.InferMode()
	}
	if c.ServiceAuthURL == "" {
		c.ServiceAuthURL = c.AuthURL
	}
	if c.Mode == ModePassword && c.TrustID != "" {
		// keystoneauth's password plugin with a trust id asks for a
		// trust-scoped token: that is trust mode.
		c.Mode = ModeTrust
	}
	if c.Mode == ModeTrust && c.Service == (Identity{}) {
		// keystoneauth's convention: OS_USERNAME/OS_PASSWORD with
		// OS_TRUST_ID are the trustee's.
		c.Service = c.Identity
		c.trusteeFromOS = true
	}
	if c.ResellerPrefix == "" {
		c.ResellerPrefix = "IMAGE_"
	}
	if !strings.HasSuffix(c.ResellerPrefix, "_") {
		// Swift appends the underscore to reseller_prefix itself.
		c.ResellerPrefix += "_"
	}
	if c.AllowExpiredWindow <= 0 {
		c.AllowExpiredWindow = 48 * time.Hour
	}
	if c.ExpiryWarning <= 0 {
		c.ExpiryWarning = 7 * 24 * time.Hour
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.RenewMargin <= 0 {
		c.RenewMargin = 5 * time.Minute
	}
	if c.MinRemaining <= 0 {
		c.MinRemaining = 2 * time.Minute
	}
	return c
}

// InferMode picks the mode from what is configured, the way the OpenStack
// tools pick an auth plugin: a trust id means trust, an application
// credential means application-credential, a user token means
// service-token, otherwise password. An explicit password mode with a
// trust id is trust mode too (keystoneauth's password plugin then asks
// for a trust-scoped token).
func (c Config) InferMode() Mode {
	switch {
	case c.TrustID != "":
		return ModeTrust
	case c.isAppCred():
		return ModeAppCredential
	case c.Token != "":
		return ModeServiceToken
	}
	return ModePassword
}

// ParseMode accepts imagefs' mode names and the auth types of keystoneauth
// (OS_AUTH_TYPE, clouds.yaml's auth_type) that mean the same: password and
// v3password (trust mode when a trust id is set), v3applicationcredential,
// token and v3token (service-token mode: a plain user token cannot be
// renewed, so imagefs uses it only together with a service user's token).
// The other keystoneauth plugins are refused by name.
func ParseMode(s string) (Mode, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	switch t {
	case "":
		return "", nil
	case "password", "v3password":
		return ModePassword, nil
	case "application-credential", "application_credential", "applicationcredential", "v3applicationcredential", "app-cred", "appcred":
		return ModeAppCredential, nil
	case "trust":
		return ModeTrust, nil
	case "service-token", "service_token", "token", "v3token":
		return ModeServiceToken, nil
	case "v2password", "v2token":
		return "", fmt.Errorf("auth type %q: imagefs speaks Keystone v3 only: use %s with a /v3 OS_AUTH_URL", s, strings.Replace(t, "v2", "v3", 1))
	}
	return "", fmt.Errorf("auth type %q is not supported: imagefs needs credentials it can renew unattended: "+
		"want password or v3password (with OS_TRUST_ID: trust mode), v3applicationcredential, token or v3token (with a service user: service-token mode), or imagefs' own names %v", s, Modes)
}

// Validate reports every problem of the configuration at once, each with
// what to do about it.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	checkURL := func(what, u string) {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			add("%s %q is not an http(s) URL", what, u)
		}
	}
	if c.AuthURL == "" {
		add("no Keystone URL: set OS_AUTH_URL or --os-auth-url (e.g. https://keystone.example.com:5000/v3)")
	} else {
		checkURL("OS_AUTH_URL", c.AuthURL)
	}
	if c.ServiceAuthURL != c.AuthURL {
		checkURL("the service user's auth URL", c.ServiceAuthURL)
	}

	switch c.Mode {
	case ModePassword:
		errs = append(errs, c.Identity.validatePassword("", true)...)
		if c.isAppCred() {
			add("password mode with an application credential set: drop OS_APPLICATION_CREDENTIAL_* or use --auth-type application-credential")
		}
	case ModeAppCredential:
		errs = append(errs, c.Identity.validateAppCred("")...)
	case ModeTrust:
		if c.TrustID == "" {
			add("trust mode needs a trust id: set OS_TRUST_ID or --os-trust-id (create one with 'imagefs trust create')")
		}
		if c.trusteeFromOS && c.Service == (Identity{}) {
			add("trust mode needs the trustee's credentials: set OS_USERNAME, OS_PASSWORD and OS_USER_DOMAIN_NAME (as for openstackclient), or IMAGEFS_SERVICE_USERNAME, IMAGEFS_SERVICE_PASSWORD and IMAGEFS_SERVICE_USER_DOMAIN_NAME")
		} else if c.trusteeFromOS {
			errs = append(errs, c.validateOSTrustee()...)
		} else if c.Service.isAppCred() {
			add("trust mode: the trustee (service user) must use a password: Keystone does not let application credentials consume trusts")
		} else {
			errs = append(errs, c.Service.validatePassword("service user (trustee) ", false)...)
		}
	case ModeServiceToken:
		if c.Token == "" {
			add("service-token mode needs the user's token: set OS_TOKEN or OS_TOKEN_FILE (e.g. from 'openstack token issue')")
		}
		if c.TrustID != "" {
			add("OS_TRUST_ID with a user token: imagefs consumes a trust with the trustee's password (OS_AUTH_TYPE=password, OS_USERNAME, OS_PASSWORD), since a token rescoped to a trust cannot be renewed")
		}
		if c.Service == (Identity{}) {
			add("service-token mode needs the service user (with OS_TOKEN, OS_AUTH_TYPE=token or v3token): a user token cannot be renewed, and a mount would fail when it expires, " +
				"so imagefs sends it only with a service user's token (which it renews; Swift then accepts the user token past its expiry, within Keystone's allow_expired_window): " +
				"set IMAGEFS_SERVICE_USERNAME, IMAGEFS_SERVICE_PASSWORD, IMAGEFS_SERVICE_PROJECT_NAME and the domains (or --service-* flags); without one, use a password, application credential or trust instead")
		} else if c.Service.isAppCred() {
			errs = append(errs, c.Service.validateAppCred("service user ")...)
		} else {
			errs = append(errs, c.Service.validatePassword("service user ", true)...)
		}
	default:
		add("auth type %q: want one of %v", c.Mode, Modes)
	}

	switch c.Interface {
	case "", "public", "internal", "admin", "publicURL", "internalURL", "adminURL":
	default:
		add("OS_INTERFACE %q: want public, internal or admin", c.Interface)
	}
	if c.StorageURL != "" {
		if u, err := url.Parse(c.StorageURL); err != nil || u.Host == "" {
			add("storage URL %q is not a URL", c.StorageURL)
		}
	}
	if c.Mode == ModeServiceToken && (len(c.ResellerPrefix) < 2 || strings.ContainsAny(c.ResellerPrefix, "/?#")) {
		add("reseller prefix %q: want a Swift reseller prefix such as IMAGE_", c.ResellerPrefix)
	}
	return errors.Join(errs...)
}

// validateOSTrustee checks the trustee of trust mode given as the OS_*
// user, as keystoneauth takes it: a password user, and no project, since a
// trust-scoped token carries the trustor's project (keystoneauth refuses
// both: "Authentication cannot be scoped to multiple targets").
func (c Config) validateOSTrustee() []error {
	id := c.Identity
	if id.isAppCred() {
		return []error{errors.New("trust mode: the trustee (OS_APPLICATION_CREDENTIAL_*) must use a password: Keystone does not let application credentials consume trusts: set OS_USERNAME and OS_PASSWORD of the trustee")}
	}
	errs := id.validatePassword("", false)
	if id.ProjectName != "" || id.ProjectID != "" {
		errs = append(errs, fmt.Errorf("OS_TRUST_ID and a project (OS_PROJECT_NAME %q, OS_PROJECT_ID %q) are both set: a token can have one scope, and a trust's is the trustor's project (openstackclient refuses this too: \"Authentication cannot be scoped to multiple targets\"): unset OS_PROJECT_NAME and OS_PROJECT_ID",
			id.ProjectName, id.ProjectID))
	}
	return errs
}

// validatePassword checks a password identity; who prefixes the messages
// ("" for the OS_* user, which names the variables).
func (id Identity) validatePassword(who string, needProject bool) []error {
	var errs []error
	v := func(os, svc string) string {
		if who == "" {
			return os
		}
		return svc
	}
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if id.Username == "" && id.UserID == "" {
		add("no %suser: set %s (or %s)", who, v("OS_USERNAME", "IMAGEFS_SERVICE_USERNAME"), v("OS_USER_ID", "IMAGEFS_SERVICE_USER_ID"))
	}
	if id.Password == "" {
		add("no %spassword: set %[2]s or %[2]s_FILE", who, v("OS_PASSWORD", "IMAGEFS_SERVICE_PASSWORD"))
	}
	if id.Username != "" && id.UserID == "" && id.UserDomainName == "" && id.UserDomainID == "" {
		add("%suser name %q needs a domain: set %s (often \"Default\")", who, id.Username, v("OS_USER_DOMAIN_NAME", "IMAGEFS_SERVICE_USER_DOMAIN_NAME"))
	}
	if needProject && id.ProjectName == "" && id.ProjectID == "" {
		add("no %sproject: set %s (or %s)", who, v("OS_PROJECT_NAME", "IMAGEFS_SERVICE_PROJECT_NAME"), v("OS_PROJECT_ID", "IMAGEFS_SERVICE_PROJECT_ID"))
	}
	if id.ProjectName != "" && id.ProjectID == "" && id.ProjectDomainName == "" && id.ProjectDomainID == "" && id.UserDomainName == "" && id.UserDomainID == "" {
		add("%sproject name %q needs a domain: set %s (often \"Default\")", who, id.ProjectName, v("OS_PROJECT_DOMAIN_NAME", "IMAGEFS_SERVICE_PROJECT_DOMAIN_NAME"))
	}
	return errs
}

// validateAppCred checks an application-credential identity.
func (id Identity) validateAppCred(who string) []error {
	var errs []error
	pre := "OS_"
	if who != "" {
		pre = "IMAGEFS_SERVICE_"
	}
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if id.ApplicationCredentialID == "" && id.ApplicationCredentialName == "" {
		add("no %sapplication credential: set %sAPPLICATION_CREDENTIAL_ID (or _NAME with the user)", who, pre)
	}
	if id.ApplicationCredentialSecret == "" {
		add("no %sapplication credential secret: set %[2]sAPPLICATION_CREDENTIAL_SECRET or %[2]sAPPLICATION_CREDENTIAL_SECRET_FILE", who, pre)
	}
	if id.ApplicationCredentialID == "" && id.ApplicationCredentialName != "" {
		if id.Username == "" && id.UserID == "" {
			add("%sapplication credential %q is named, not given by id: set its owner, %sUSERNAME and %sUSER_DOMAIN_NAME (or %sUSER_ID)", who, id.ApplicationCredentialName, pre, pre, pre)
		} else if id.UserID == "" && id.UserDomainName == "" && id.UserDomainID == "" {
			add("%suser name %q needs a domain: set %sUSER_DOMAIN_NAME (often \"Default\")", who, id.Username, pre)
		}
	}
	return errs
}

// Sentinel errors of New and the renewals.
var (
	// ErrCredentials: Keystone refused the credentials (HTTP 401/403), or
	// the trust, application credential or user token is no longer valid.
	ErrCredentials = errors.New("Keystone refused the credentials")
	// ErrUnreachable: Keystone could not be reached.
	ErrUnreachable = errors.New("cannot reach Keystone")
	// ErrNoEndpoint: the catalog has no usable object-store endpoint.
	ErrNoEndpoint = errors.New("no object-store endpoint in the Keystone catalog")
	// ErrExpired: a hard deadline has passed (an application credential's
	// expiry, or the allow-expired window of a user token).
	ErrExpired = errors.New("credential expired")
)

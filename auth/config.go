package auth

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Config says how to obtain Keystone tokens and where Swift is. Fields
// follow the OS_* environment variables of the OpenStack CLI.
type Config struct {
	AuthURL string // OS_AUTH_URL, Keystone v3 (".../v3")

	Username          string // OS_USERNAME
	UserID            string // OS_USER_ID
	Password          Secret // OS_PASSWORD
	UserDomainName    string // OS_USER_DOMAIN_NAME
	UserDomainID      string // OS_USER_DOMAIN_ID
	ProjectName       string // OS_PROJECT_NAME
	ProjectID         string // OS_PROJECT_ID
	ProjectDomainName string // OS_PROJECT_DOMAIN_NAME
	ProjectDomainID   string // OS_PROJECT_DOMAIN_ID

	Region    string // OS_REGION_NAME: the catalog region of the object-store endpoint
	Interface string // OS_INTERFACE: public (default), internal or admin
	// StorageURL, if set, replaces the catalog's object-store endpoint.
	StorageURL string

	// Timeout bounds one request to Keystone.
	Timeout time.Duration
	// RenewMargin is the least time before expiry at which the keeper
	// renews (it uses 10% of the lifetime when that is more, and half the
	// lifetime for short-lived tokens).
	RenewMargin time.Duration
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.AuthURL == "" {
		errs = append(errs, errors.New("no Keystone URL: set OS_AUTH_URL or --os-auth-url (e.g. https://keystone.example.com:5000/v3)"))
	} else if u, err := url.Parse(c.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("OS_AUTH_URL %q is not an http(s) URL", c.AuthURL))
	}
	if c.Username == "" && c.UserID == "" {
		errs = append(errs, errors.New("no user: set OS_USERNAME (or OS_USER_ID)"))
	}
	if c.Password == "" {
		errs = append(errs, errors.New("no password: set OS_PASSWORD"))
	}
	if c.Username != "" && c.UserDomainName == "" && c.UserDomainID == "" {
		errs = append(errs, errors.New("OS_USERNAME needs a domain: set OS_USER_DOMAIN_NAME (often \"Default\")"))
	}
	if c.ProjectName != "" && c.ProjectDomainName == "" && c.ProjectDomainID == "" && c.UserDomainName == "" && c.UserDomainID == "" {
		errs = append(errs, errors.New("OS_PROJECT_NAME needs a domain: set OS_PROJECT_DOMAIN_NAME (often \"Default\")"))
	}
	switch c.Interface {
	case "", "public", "internal", "admin", "publicURL", "internalURL", "adminURL":
	default:
		errs = append(errs, fmt.Errorf("OS_INTERFACE %q: want public, internal or admin", c.Interface))
	}
	if c.StorageURL != "" {
		if u, err := url.Parse(c.StorageURL); err != nil || u.Host == "" {
			errs = append(errs, fmt.Errorf("storage URL %q is not a URL", c.StorageURL))
		}
	}
	return errors.Join(errs...)
}

// Sentinel errors of New and the renewals.
var (
	// ErrCredentials: Keystone refused the credentials (HTTP 401/403).
	ErrCredentials = errors.New("Keystone refused the credentials")
	// ErrUnreachable: Keystone could not be reached.
	ErrUnreachable = errors.New("cannot reach Keystone")
	// ErrNoEndpoint: the catalog has no usable object-store endpoint.
	ErrNoEndpoint = errors.New("no object-store endpoint in the Keystone catalog")
)

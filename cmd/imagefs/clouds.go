package main

import (
	"crypto/tls"
	"fmt"

	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"

	"github.com/imagefs/imagefs/auth"
)

// fromCloud fills the empty fields of cfg and id from the clouds.yaml entry
// name, found the way the OpenStack tools find it (OS_CLIENT_CONFIG_FILE,
// then ./clouds.yaml, ~/.config/openstack/clouds.yaml,
// /etc/openstack/clouds.yaml, with secure.yaml next to it). Flags and
// environment variables, already in cfg, take precedence. It returns the
// TLS configuration of the entry (cacert, cert, key, verify), with those of
// o (flags, OS_* variables) taking precedence.
func fromCloud(name string, cfg *auth.Config, id *auth.Identity, o auth.TLSOptions) (*tls.Config, error) {
	opts := []clouds.ParseOption{clouds.WithCloudName(name), clouds.WithCACertPath(o.CACert),
		clouds.WithClientCertPath(o.Cert), clouds.WithClientKeyPath(o.Key)}
	if o.Insecure {
		opts = append(opts, clouds.WithInsecure(true))
	}
	ao, eo, tc, err := clouds.Parse(opts...)
	if err != nil {
		return nil, fmt.Errorf("clouds.yaml, cloud %q: %v", name, err)
	}
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	fillSecret := func(dst *auth.Secret, v string) {
		if *dst == "" {
			*dst = auth.Secret(v)
		}
	}
	fill(&cfg.AuthURL, ao.IdentityEndpoint)
	fill(&id.Username, ao.Username)
	fill(&id.UserID, ao.UserID)
	fillSecret(&id.Password, ao.Password)
	fill(&id.UserDomainName, ao.DomainName)
	fill(&id.UserDomainID, ao.DomainID)
	fill(&id.ApplicationCredentialID, ao.ApplicationCredentialID)
	fill(&id.ApplicationCredentialName, ao.ApplicationCredentialName)
	fillSecret(&id.ApplicationCredentialSecret, ao.ApplicationCredentialSecret)
	fillSecret(&cfg.Token, ao.TokenID)
	if sc := ao.Scope; sc != nil {
		fill(&cfg.TrustID, sc.TrustID)
		fill(&id.ProjectID, sc.ProjectID)
		fill(&id.ProjectName, sc.ProjectName)
		if sc.ProjectName != "" {
			fill(&id.ProjectDomainName, sc.DomainName)
			fill(&id.ProjectDomainID, sc.DomainID)
		}
	}
	fill(&id.ProjectID, ao.TenantID)
	fill(&id.ProjectName, ao.TenantName)
	fill(&cfg.Region, eo.Region)
	if eo.Availability != "" {
		fill(&cfg.Interface, string(eo.Availability))
	}
	return tc, nil
}

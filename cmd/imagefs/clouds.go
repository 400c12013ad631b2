package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"gopkg.in/yaml.v2"

	"github.com/imagefs/imagefs/auth"
)

// cloudEntry is what fromCloud found besides the auth settings.
type cloudEntry struct {
	TLS      *tls.Config
	AuthType string // the entry's auth_type ("" if none)
	Path     string // the clouds.yaml read
	Secure   bool   // a secure.yaml was read beside it
}

// fromCloud fills the empty fields of cfg and id from the clouds.yaml entry
// name, found the way the OpenStack tools find it (OS_CLIENT_CONFIG_FILE,
// then ./clouds.yaml, ~/.config/openstack/clouds.yaml,
// /etc/openstack/clouds.yaml, with secure.yaml next to it). Flags and
// environment variables, already in cfg, take precedence. It returns the
// TLS configuration of the entry (cacert, cert, key, verify), with those of
// o (flags, OS_* variables) taking precedence, and the entry's auth_type.
func fromCloud(name string, cfg *auth.Config, id *auth.Identity, o auth.TLSOptions) (cloudEntry, error) {
	bad := func(err error) error { return fmt.Errorf("clouds.yaml, cloud %q: %v", name, err) }
	path, cloudsYAML, secureYAML, err := readCloudFiles()
	if err != nil {
		return cloudEntry{}, bad(err)
	}
	ao, eo, tc, err := parseCloud(name, cloudsYAML, secureYAML, o)
	if err != nil {
		return cloudEntry{}, bad(fmt.Errorf("%s: %v", path, err))
	}
	applyCloud(cfg, id, ao, eo)
	return cloudEntry{TLS: tc, AuthType: cloudAuthType(name, cloudsYAML, secureYAML), Path: path, Secure: secureYAML != nil}, nil
}

// cloudAuthType is the auth_type of entry name (secure.yaml's if it has
// one), which gophercloud reads but does not return. The files parsed
// already: an error here is no auth_type.
func cloudAuthType(name string, cloudsYAML, secureYAML []byte) string {
	t := ""
	for _, b := range [][]byte{cloudsYAML, secureYAML} {
		var cs clouds.Clouds
		if b != nil && yaml.Unmarshal(b, &cs) == nil && cs.Clouds[name].AuthType != "" {
			t = string(cs.Clouds[name].AuthType)
		}
	}
	return t
}

// maxCloudsFile bounds clouds.yaml and secure.yaml: real ones have a few
// KiB, and OS_CLIENT_CONFIG_FILE=/dev/zero must not eat the memory.
const maxCloudsFile = 1 << 20

// readCloudFiles reads clouds.yaml from the first place the OpenStack
// tools look (OS_CLIENT_CONFIG_FILE, or ./, ~/.config/openstack/ or
// $XDG_CONFIG_HOME/openstack/, /etc/openstack/), and secure.yaml next to
// it if there is one (nil if not), each at most maxCloudsFile bytes; path
// is the clouds.yaml read.
func readCloudFiles() (path string, cloudsYAML, secureYAML []byte, err error) {
	locations := []string{os.Getenv("OS_CLIENT_CONFIG_FILE")}
	if locations[0] == "" {
		cwd, err := os.Getwd()
		if err != nil {
			return "", nil, nil, err
		}
		conf := os.Getenv("XDG_CONFIG_HOME")
		if conf == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", nil, nil, err
			}
			conf = filepath.Join(home, ".config")
		}
		locations = []string{filepath.Join(cwd, "clouds.yaml"), filepath.Join(conf, "openstack", "clouds.yaml"), "/etc/openstack/clouds.yaml"}
	}
	for _, p := range locations {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		cloudsYAML, err = readBounded(f, p)
		if err != nil {
			return "", nil, nil, err
		}
		if sf, err := os.Open(filepath.Join(filepath.Dir(p), "secure.yaml")); err == nil {
			if secureYAML, err = readBounded(sf, sf.Name()); err != nil {
				return "", nil, nil, err
			}
		}
		return p, cloudsYAML, secureYAML, nil
	}
	return "", nil, nil, fmt.Errorf("no clouds.yaml in %v", locations)
}

// readBounded reads and closes f, an error if it has more than maxCloudsFile bytes.
func readBounded(f *os.File, name string) ([]byte, error) {
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCloudsFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxCloudsFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: is it a clouds.yaml?", name, maxCloudsFile)
	}
	return b, nil
}

// parseCloud reads entry name of a clouds.yaml (and secure.yaml, nil if
// none) with gophercloud, and the TLS settings of o over the entry's.
func parseCloud(name string, cloudsYAML, secureYAML []byte, o auth.TLSOptions) (gophercloud.AuthOptions, gophercloud.EndpointOpts, *tls.Config, error) {
	opts := []clouds.ParseOption{clouds.WithCloudName(name), clouds.WithCloudsYAML(bytes.NewReader(cloudsYAML)),
		clouds.WithCACertPath(o.CACert), clouds.WithClientCertPath(o.Cert), clouds.WithClientKeyPath(o.Key)}
	if secureYAML != nil {
		opts = append(opts, clouds.WithSecureYAML(bytes.NewReader(secureYAML)))
	}
	if o.Insecure {
		opts = append(opts, clouds.WithInsecure(true))
	}
	return clouds.Parse(opts...)
}

// applyCloud fills the empty fields of cfg and id from a parsed entry.
func applyCloud(cfg *auth.Config, id *auth.Identity, ao gophercloud.AuthOptions, eo gophercloud.EndpointOpts) {
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
}

package main

import (
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/auth"
)

// TestCloudsYAMLPrecedence: clouds.yaml fills only what flags and the
// environment left empty; secure.yaml next to it supplies secrets; the
// service user can come from another entry.
func TestCloudsYAMLPrecedence(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("clouds.yaml", `clouds:
  images:
    auth:
      auth_url: https://keystone.example/v3
      username: from-file
      user_domain_name: Default
      project_name: proj
      project_domain_name: Default
    region_name: RegionTwo
    interface: internal
  svc:
    auth:
      auth_url: https://keystone-svc.example/v3
      username: imagefs
      password: svc-secret
      user_domain_name: Default
      project_name: service
      project_domain_name: Default
`)
	write("secure.yaml", "clouds:\n  images:\n    auth:\n      password: file-secret\n")
	for _, v := range []string{"OS_REGION_NAME", "OS_INTERFACE", "OS_CLOUD"} {
		t.Setenv(v, "")
	}
	t.Setenv("OS_CLIENT_CONFIG_FILE", filepath.Join(dir, "clouds.yaml"))

	var cfg Config
	cfg.cloud, cfg.serviceCloud = "images", "svc"
	cfg.Auth.Username = "from-flag" // a flag or OS_USERNAME wins over the file
	if err := cfg.resolveAuth(); err != nil {
		t.Fatal(err)
	}
	a := cfg.Auth
	want := auth.Config{AuthURL: "https://keystone.example/v3", Region: "RegionTwo", Interface: "internal",
		Identity:       auth.Identity{Username: "from-flag", Password: "file-secret", UserDomainName: "Default", ProjectName: "proj", ProjectDomainName: "Default"},
		Service:        auth.Identity{Username: "imagefs", Password: "svc-secret", UserDomainName: "Default", ProjectName: "service", ProjectDomainName: "Default"},
		ServiceAuthURL: "https://keystone-svc.example/v3"}
	if a.AuthURL != want.AuthURL || a.Region != want.Region || a.Interface != want.Interface || a.Identity != want.Identity ||
		a.Service != want.Service || a.ServiceAuthURL != want.ServiceAuthURL {
		t.Errorf("got %+v\nwant %+v", a, want)
	}
	if a.Mode != "" || a.InferMode() != auth.ModePassword {
		t.Errorf("mode %q / inferred %q", a.Mode, a.InferMode())
	}

	cfg = Config{cloud: "nope"}
	if err := cfg.resolveAuth(); err == nil {
		t.Error("an unknown cloud was accepted")
	}
	cfg = Config{authType: "v3oidcpassword"}
	if err := cfg.resolveAuth(); err == nil {
		t.Error("an unsupported auth type was accepted")
	}
}

// TestCloudsYAMLTLS: clouds.yaml's cacert and verify set the TLS of the
// mount; --os-cacert (OS_CACERT) and --insecure win over them.
func TestCloudsYAMLTLS(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := "clouds:\n  images:\n    auth:\n      auth_url: https://keystone.example/v3\n    cacert: " + ca +
		"\n  broken:\n    auth:\n      auth_url: https://keystone.example/v3\n    cacert: " + filepath.Join(dir, "missing.pem") +
		"\n  lax:\n    auth:\n      auth_url: https://keystone.example/v3\n    verify: false\n"
	if err := os.WriteFile(filepath.Join(dir, "clouds.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"OS_CLOUD", "OS_CACERT", "OS_CERT", "OS_KEY"} {
		t.Setenv(v, "")
	}
	t.Setenv("OS_CLIENT_CONFIG_FILE", filepath.Join(dir, "clouds.yaml"))
	verifies := func(cfg Config) bool {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.Auth.TLS}}
		resp, err := c.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}

	cfg := Config{cloud: "images"}
	if err := cfg.resolveAuth(); err != nil {
		t.Fatal(err)
	}
	if !verifies(cfg) {
		t.Error("clouds.yaml's cacert was not used")
	}
	cfg = Config{cloud: "broken"}
	if err := cfg.resolveAuth(); err == nil || !strings.Contains(err.Error(), `clouds.yaml, cloud "broken"`) {
		t.Errorf("a missing cacert file: %v", err)
	}
	cfg = Config{cloud: "broken", tls: auth.TLSOptions{CACert: ca}} // the flag wins
	if err := cfg.resolveAuth(); err != nil || !verifies(cfg) {
		t.Errorf("--os-cacert over a broken cacert: %v", err)
	}
	cfg = Config{cloud: "lax"}
	if err := cfg.resolveAuth(); err != nil || cfg.Auth.TLS == nil || !cfg.Auth.TLS.InsecureSkipVerify {
		t.Errorf("verify: false: %v, %+v", err, cfg.Auth.TLS)
	}
	cfg = Config{tls: auth.TLSOptions{CACert: ca}} // no clouds.yaml
	if err := cfg.resolveAuth(); err != nil || !verifies(cfg) {
		t.Errorf("--os-cacert: %v", err)
	}
}

// TestCloudsYAMLTrustAndAuthType: keystoneauth's clouds.yaml forms: a
// trust_id under auth with the trustee's username and password is trust
// mode; the entry's auth_type counts when --auth-type and OS_AUTH_TYPE are
// unset; an auth_type keystoneauth has but imagefs cannot use is refused,
// naming the file.
func TestCloudsYAMLTrustAndAuthType(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(p, []byte(`clouds:
  trust:
    auth_type: password
    auth:
      auth_url: https://keystone.example/v3
      username: imagefs
      password: trustee-secret
      user_domain_name: Default
      trust_id: 0123abcd
  trustproject:
    auth:
      auth_url: https://keystone.example/v3
      username: imagefs
      password: trustee-secret
      user_domain_name: Default
      project_name: demo
      trust_id: 0123abcd
  totp:
    auth_type: v3totp
    auth:
      auth_url: https://keystone.example/v3
      username: u
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OS_CLIENT_CONFIG_FILE", p)
	cfg := Config{cloud: "trust"}
	if err := errors.Join(cfg.resolveAuth(), cfg.Auth.Validate()); err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.TrustID != "0123abcd" || cfg.Auth.Mode != auth.ModePassword || cfg.Auth.Username != "imagefs" {
		t.Errorf("trust entry: %+v", cfg.Auth)
	}
	cfg = Config{cloud: "trustproject"}
	err := errors.Join(cfg.resolveAuth(), cfg.Auth.Validate())
	if err == nil || !strings.Contains(err.Error(), "OS_TRUST_ID and a project") {
		t.Errorf("trust_id with project_name: %v", err)
	}
	cfg = Config{cloud: "totp"}
	err = cfg.resolveAuth()
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `auth type "v3totp" is not supported`) {
		t.Errorf("auth_type v3totp: %v", err)
	}
	cfg = Config{cloud: "totp", authType: "password"} // OS_AUTH_TYPE wins
	if err := cfg.resolveAuth(); err != nil {
		t.Errorf("auth_type overridden: %v", err)
	}
}

package auth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestValidateReportsEverythingAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"empty", Config{}, []string{"no Keystone URL", "no user: set OS_USERNAME", "no password: set OS_PASSWORD", "no project: set OS_PROJECT_NAME"}},
		{"password without domains", Config{AuthURL: "http://k/v3", Identity: Identity{Username: "u", Password: "p", ProjectName: "pr"}},
			[]string{`user name "u" needs a domain: set OS_USER_DOMAIN_NAME`, `project name "pr" needs a domain`}},
		{"app cred by name without user", Config{AuthURL: "http://k/v3", Identity: Identity{ApplicationCredentialName: "n"}},
			[]string{"no application credential secret", `application credential "n" is named, not given by id: set its owner`}},
		{"trust without trustee", Config{AuthURL: "http://k/v3", TrustID: "t"},
			[]string{"trust mode needs the trustee's credentials: set OS_USERNAME, OS_PASSWORD and OS_USER_DOMAIN_NAME (as for openstackclient), or IMAGEFS_SERVICE_USERNAME"}},
		{"trust with OS_* trustee and a project", Config{AuthURL: "http://k/v3", Mode: ModePassword, TrustID: "t",
			Identity: Identity{Username: "u", Password: "p", UserDomainName: "D", ProjectName: "demo"}},
			[]string{`OS_TRUST_ID and a project (OS_PROJECT_NAME "demo", OS_PROJECT_ID "") are both set`}},
		{"trust with OS_* trustee without password", Config{AuthURL: "http://k/v3", TrustID: "t", Identity: Identity{Username: "u"}},
			[]string{"no password: set OS_PASSWORD", `user name "u" needs a domain: set OS_USER_DOMAIN_NAME`}},
		{"trust with an OS_* app cred trustee", Config{AuthURL: "http://k/v3", TrustID: "t", Identity: Identity{ApplicationCredentialID: "a", ApplicationCredentialSecret: "s"}},
			[]string{"the trustee (OS_APPLICATION_CREDENTIAL_*) must use a password"}},
		{"token with a trust", Config{AuthURL: "http://k/v3", Mode: ModeServiceToken, Token: "t", TrustID: "tr", Service: Identity{Username: "s", Password: "p", UserDomainName: "D", ProjectName: "p"}},
			[]string{"OS_TRUST_ID with a user token"}},
		{"trust with app cred trustee", Config{AuthURL: "http://k/v3", TrustID: "t", Service: Identity{ApplicationCredentialID: "a", ApplicationCredentialSecret: "s"}},
			[]string{"the trustee (service user) must use a password"}},
		{"service token without service user", Config{AuthURL: "http://k/v3", Mode: ModeServiceToken},
			[]string{"needs the user's token: set OS_TOKEN", "needs the service user (with OS_TOKEN, OS_AUTH_TYPE=token or v3token): a user token cannot be renewed, and a mount would fail when it expires"}},
		{"service user without project", Config{AuthURL: "ftp://k", Token: "t", Service: Identity{Username: "s", Password: "p", UserDomainName: "D"}, Interface: "outer"},
			[]string{`OS_AUTH_URL "ftp://k" is not an http(s) URL`, "no service user project: set IMAGEFS_SERVICE_PROJECT_NAME", `OS_INTERFACE "outer"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil {
				t.Fatal("valid")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q\ndoes not say %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
				t.Errorf("%d problems reported, want %d:\n%s", n, len(tc.want), err)
			}
		})
	}
	ok := Config{AuthURL: "http://k/v3", Identity: Identity{ApplicationCredentialID: "a", ApplicationCredentialSecret: "s", ProjectName: "from-openrc"}}
	if err := ok.Validate(); err != nil {
		t.Errorf("application credential with a leftover OS_PROJECT_NAME: %v", err)
	}
	// keystoneauth's trust form: password with a trust id, the trustee as
	// the OS_* user, no project; and imagefs' own, IMAGEFS_SERVICE_*.
	for _, c := range []Config{
		{AuthURL: "http://k/v3", Mode: ModePassword, TrustID: "t", Identity: Identity{Username: "svc", Password: "p", UserDomainName: "D", ProjectDomainName: "D"}},
		{AuthURL: "http://k/v3", TrustID: "t", Identity: Identity{UserID: "u1", Password: "p"}},
		{AuthURL: "http://k/v3", Mode: ModeTrust, TrustID: "t", Identity: Identity{ProjectName: "demo"}, Service: Identity{Username: "svc", Password: "p", UserDomainName: "D", ProjectName: "service"}},
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
		if m := c.withDefaults().Mode; m != ModeTrust {
			t.Errorf("%+v: mode %s, want trust", c, m)
		}
	}
}

func TestInferAndParseMode(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want Mode
	}{
		{Config{Identity: Identity{Username: "u", Password: "p"}}, ModePassword},
		{Config{Identity: Identity{Username: "u", Password: "p", ApplicationCredentialID: "a"}}, ModeAppCredential},
		{Config{TrustID: "t", Identity: Identity{ApplicationCredentialID: "a"}}, ModeTrust},
		{Config{Token: "t", Identity: Identity{Username: "u", Password: "p"}}, ModeServiceToken},
	} {
		if got := tc.cfg.InferMode(); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.cfg, got, tc.want)
		}
	}
	for in, want := range map[string]Mode{"v3applicationcredential": ModeAppCredential, "v3password": ModePassword, "token": ModeServiceToken,
		"Trust": ModeTrust, "service-token": ModeServiceToken, "": ""} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %s, %v", in, got, err)
		}
	}
	for in, want := range map[string]string{"v3oidcpassword": "is not supported", "v3totp": "is not supported", "admin_token": "is not supported",
		"v2password": "use v3password", "v2token": "use v3token"} {
		if _, err := ParseMode(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMode(%q): %v, want an error saying %q", in, err, want)
		}
	}
}

// TestSecretsNeverPrint: a Config or Credential in any format or log line
// shows no secret.
func TestSecretsNeverPrint(t *testing.T) {
	cfg := Config{Identity: Identity{Password: "pw-123", ApplicationCredentialSecret: "acs-123"}, Token: "tok-123",
		Service: Identity{Password: "svc-123"}}
	cred := &Credential{Token: "tok-456", ServiceToken: "svc-456"}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("x", "cfg", cfg, "cred", cred, "pw", cfg.Password)
	jl := slog.New(slog.NewJSONHandler(&buf, nil))
	jl.Info("x", "cfg", cfg, "cred", cred, "pw", cfg.Password)
	j, _ := json.Marshal(cfg.Password)
	out := fmt.Sprintf("%v %+v %#v %s %v %+v %s", cfg, cfg, cfg, cfg.Password, cred, cred, j) + buf.String()
	for _, s := range []string{"pw-123", "acs-123", "tok-123", "svc-123", "tok-456", "svc-456"} {
		if strings.Contains(out, s) {
			t.Errorf("%s printed", s)
		}
	}
}

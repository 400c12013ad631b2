package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/auth"
)

// trustCommand is `imagefs trust create|delete`: a user delegates their
// roles on their project to the service user, which then mounts with
// --auth-type trust and the trust id, renewing with its own password only.
func trustCommand(cfg *Config) *cli.Command {
	var (
		roles    cli.StringSlice
		trustee  string
		expires  string
		flags    = credentialFlags(cfg)
		usageErr = func(c *cli.Context, err error, _ bool) error { return &usageError{msg: err.Error()} }
	)
	return &cli.Command{
		Name:  "trust",
		Usage: "create or delete the trust of trust mode",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "delegate the user's roles on their project to the service user; prints the trust id",
				Description: "The user (the trustor) is OS_TOKEN, used once, or the user's credentials (OS_USERNAME, OS_PASSWORD,\n" +
					"OS_PROJECT_NAME...). The trustee is the service user (IMAGEFS_SERVICE_USERNAME, IMAGEFS_SERVICE_PASSWORD,\n" +
					"IMAGEFS_SERVICE_USER_DOMAIN_NAME), or --trustee-user-id. Then mount with OS_TRUST_ID set to the id printed:\n" +
					"the service user renews its trust-scoped tokens with its own password, never with the user's.",
				Flags: append([]cli.Flag{
					&cli.StringSliceFlag{Name: "role", Destination: &roles, Usage: "role to delegate (repeatable); default: all the user's roles on the project"},
					&cli.StringFlag{Name: "trustee-user-id", Destination: &trustee, Usage: "id of the service user (instead of its credentials)"},
					&cli.StringFlag{Name: "expires", Destination: &expires, Usage: "end of the trust: a duration (720h) or a time (2027-01-31T00:00:00Z); default: never"},
				}, flags...),
				OnUsageError: usageErr,
				Action: func(c *cli.Context) error {
					if c.NArg() != 0 {
						return &usageError{msg: "trust create takes no arguments"}
					}
					req, err := trustRequest(cfg)
					if err != nil {
						return err
					}
					req.Roles, req.TrusteeUserID = roles.Value(), trustee
					if expires != "" {
						if req.ExpiresAt, err = parseExpiry(expires); err != nil {
							return &usageError{msg: err.Error()}
						}
					}
					ctx, cancel := context.WithTimeout(c.Context, 2*time.Minute)
					defer cancel()
					tr, err := auth.CreateTrust(ctx, req)
					if err != nil {
						return err
					}
					exp := "never"
					if !tr.ExpiresAt.IsZero() {
						exp = tr.ExpiresAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(os.Stderr, "imagefs: trust created: project %s, trustor %s, trustee %s, roles %s, expires %s\n",
						tr.ProjectID, tr.TrustorUserID, tr.TrusteeUserID, strings.Join(tr.Roles, ","), exp)
					fmt.Println(tr.ID)
					return nil
				},
			},
			{
				Name:         "delete",
				Usage:        "delete a trust (as its trustor)",
				ArgsUsage:    "TRUST_ID",
				Flags:        flags,
				OnUsageError: usageErr,
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return &usageError{msg: "trust delete needs the trust id"}
					}
					req, err := trustRequest(cfg)
					if err != nil {
						return err
					}
					ctx, cancel := context.WithTimeout(c.Context, 2*time.Minute)
					defer cancel()
					return auth.DeleteTrust(ctx, req, c.Args().First())
				},
			},
		},
	}
}

// trustRequest takes the trustor and trustee from the mount's settings.
func trustRequest(cfg *Config) (auth.TrustRequest, error) {
	if err := cfg.resolveAuth(); err != nil {
		return auth.TrustRequest{}, err
	}
	a := cfg.Auth
	if a.AuthURL == "" {
		return auth.TrustRequest{}, errors.New("no Keystone URL: set OS_AUTH_URL or --os-auth-url")
	}
	r := auth.TrustRequest{AuthURL: a.AuthURL, Token: a.Token, Trustee: a.Service, TrusteeAuthURL: a.ServiceAuthURL, TLS: a.TLS}
	if a.Token == "" {
		r.Trustor = a.Identity
	}
	return r, nil
}

// parseExpiry reads a duration from now or an RFC 3339 time.
func parseExpiry(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return time.Now().Add(d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		if !t.After(time.Now()) {
			return time.Time{}, fmt.Errorf("--expires %s is in the past", s)
		}
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--expires %q: want a duration (720h) or a time (2027-01-31T00:00:00Z)", s)
}

// credentialFlags are the auth flags that say who is who (not the ones
// tuning a mount's keeper).
func credentialFlags(cfg *Config) []cli.Flag {
	var out []cli.Flag
	for _, f := range authFlags(cfg) {
		if cf, ok := f.(cli.CategorizableFlag); ok && cf.GetCategory() == "Auth mode" {
			continue
		}
		out = append(out, f)
	}
	return out
}

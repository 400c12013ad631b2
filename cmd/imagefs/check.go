package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/auth"
	"github.com/imagefs/imagefs/segments"
)

// `imagefs config check`: a subcommand rather than `mount --check`, because
// it is not a mount: it needs neither root, FUSE nor a free mountpoint
// (it checks a new configuration next to the running mount it is meant to
// replace), and it prints a report on stdout where mount runs as a daemon.
// It takes every flag of mount, so an operator replaces "mount" by "config
// check" in a unit's command line.

// configCommand is `imagefs config check`.
func configCommand(cfg *Config) *cli.Command {
	flags := mountFlags(cfg)
	usageErr := func(c *cli.Context, err error, _ bool) error {
		return &usageError{msg: err.Error(), cmd: "config check"}
	}
	return &cli.Command{
		Name:  "config",
		Usage: "inspect the configuration of a mount",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "print the effective configuration and where each value comes from, then try Keystone and Swift, without mounting",
			ArgsUsage: "[CONTAINER[/PREFIX] [MOUNTPOINT]] | --account [MOUNTPOINT]",
			Description: "Takes the flags, environment, clouds.yaml, secret files and systemd credentials that 'imagefs mount' would.\n" +
				"Secrets are never printed. Gets a token (mode, user, project, expiry), HEADs the account and the container,\n" +
				"reads /info. Exits 1 with the error mount would give if something does not work.",
			Flags:        flags,
			OnUsageError: usageErr,
			Action: func(c *cli.Context) error {
				if cfg.Account {
					// As mount --account: the account is the credentials'.
					if c.NArg() > 1 {
						return &usageError{msg: fmt.Sprintf("config check --account takes at most MOUNTPOINT, got %d arguments", c.NArg()), cmd: "config check"}
					}
					cfg.Mountpoint = c.Args().Get(0)
					return runCheck(c, cfg, flags, os.Stdout)
				}
				if c.NArg() > 2 {
					return &usageError{msg: fmt.Sprintf("config check takes at most CONTAINER[/PREFIX] and MOUNTPOINT, got %d arguments", c.NArg()), cmd: "config check"}
				}
				cfg.Container, cfg.Prefix, _ = strings.Cut(c.Args().Get(0), "/")
				cfg.Mountpoint = c.Args().Get(1)
				return runCheck(c, cfg, flags, os.Stdout)
			},
		}},
	}
}

// runCheck prints the configuration with its sources, then checks
// Keystone and Swift; it returns the first problem, as mount would.
func runCheck(c *cli.Context, cfg *Config, flags []cli.Flag, out io.Writer) error {
	before := flagValues(c, flags)
	secretsBefore := map[*secretSource]auth.Secret{}
	for _, s := range cfg.secrets {
		secretsBefore[s] = *s.dst
	}
	cfgErr := errors.Join(cfg.resolveAuth(), cfg.Validate())
	printSettings(out, c, cfg, flags, before, secretsBefore)
	if cfg.Mountpoint != "" {
		cfgErr = errors.Join(checkMountpoint(cfg.Mountpoint), cfgErr)
	}
	if cfgErr != nil {
		fmt.Fprintln(out, "\nconfiguration: NOT OK (see the errors below)")
		return cfgErr
	}

	ctx, cancel := context.WithTimeout(c.Context, 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	keeper, raw, err := login(ctx, cfg, log, nil)
	if err != nil {
		fmt.Fprintln(out, "\nKeystone: NOT OK")
		return err
	}
	cr := keeper.Current()
	fmt.Fprintf(out, "\nKeystone: ok: mode %s, user %s, project %s, token expires in %v (%s)\n", keeper.Mode(),
		named(cr.UserName, cr.UserID), named(cr.ProjectName, cr.ProjectID), time.Until(cr.Expires).Round(time.Second),
		time.Now().Add(time.Until(cr.Expires)).UTC().Format(time.RFC3339))
	if !cr.UserExpires.IsZero() {
		fmt.Fprintf(out, "  user token: expires in %v; usable with the service token until %s\n",
			time.Until(cr.UserExpires).Round(time.Second), cr.HardDeadline.UTC().Format(time.RFC3339))
	} else if !cr.HardDeadline.IsZero() {
		fmt.Fprintf(out, "  credential expires at %s\n", cr.HardDeadline.UTC().Format(time.RFC3339))
	}

	fmt.Fprintf(out, "Swift: account %s\n", cr.StorageURL)
	if err := headAccount(ctx, cfg, keeper, out); err != nil {
		return err
	}
	if cfg.Container != "" {
		// Never created here: config check changes nothing.
		if _, err := raw.HeadContainer(ctx, cfg.Container); errors.Is(err, segments.ErrNotFound) && cfg.CreateContainer {
			fmt.Fprintf(out, "  container %q: does not exist; mount creates it (--create-container)\n", cfg.Container)
		} else if err := checkContainer(ctx, raw, keeper, cfg.Container, false); err != nil {
			return err
		} else {
			fmt.Fprintf(out, "  container %q: ok\n", cfg.Container)
		}
	}
	limits, err := checkStore(raw).Limits(ctx)
	if err != nil {
		return fmt.Errorf("cannot read Swift's /info (mount would assume default limits): %v", err)
	}
	if !limits.SLO {
		return fmt.Errorf("the Swift cluster at %s has no slo middleware: imagefs stores large images as static large objects", cr.StorageURL)
	}
	fmt.Fprintf(out, "  /info: slo yes, max_manifest_segments %d, max_file_size %d\n", limits.MaxManifestSegments, limits.MaxFileSize)
	if w := &cfg.Write; w.SegmentSize.Bytes() > limits.MaxFileSize {
		return fmt.Errorf("--segment-size %s is larger than the cluster's max_file_size (%d bytes)", w.SegmentSize, limits.MaxFileSize)
	}
	fmt.Fprintln(out, "\nconfiguration: ok")
	return nil
}

// named is "name (id)", or the id alone.
func named(name, id string) string {
	if name == "" {
		return id
	}
	return fmt.Sprintf("%s (%s)", name, id)
}

// headAccount HEADs the account with the keeper's tokens and prints what
// Swift says of it.
func headAccount(ctx context.Context, cfg *Config, keeper *auth.Keeper, out io.Writer) error {
	t := segments.DefaultTransport()
	if cfg.Auth.TLS != nil {
		t.TLSClientConfig = cfg.Auth.TLS.Clone()
	}
	url := keeper.Current().StorageURL
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: keeper.Transport(t), Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		if hint := auth.TLSProblem(err); hint != "" {
			return fmt.Errorf("cannot reach the Swift account %s: %v: %s", url, err, hint)
		}
		return fmt.Errorf("cannot reach the Swift account %s: %v", url, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		if keeper.Mode() == auth.ModeServiceToken {
			return fmt.Errorf("Swift refused the account %s (HTTP %d): the service user needs the role Swift's keystonemiddleware requires (service_token_roles, usually 'service'), and Swift must list the account's reseller prefix with its <PREFIX>_service_roles", url, resp.StatusCode)
		}
		return fmt.Errorf("Swift refused the account %s (HTTP %d): the user needs an operator role (member) on the project", url, resp.StatusCode)
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("HEAD of the Swift account %s: HTTP %d", url, resp.StatusCode)
	}
	h := resp.Header
	fmt.Fprintf(out, "  account: ok: %s containers, %s objects, %s bytes used", orDash(h.Get("X-Account-Container-Count")),
		orDash(h.Get("X-Account-Object-Count")), orDash(h.Get("X-Account-Bytes-Used")))
	if q := h.Get("X-Account-Meta-Quota-Bytes"); q != "" {
		fmt.Fprintf(out, ", quota %s bytes", q)
	}
	fmt.Fprintln(out)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// flagValues are the flags' values as strings, by name.
func flagValues(c *cli.Context, flags []cli.Flag) map[string]string {
	m := map[string]string{}
	for _, f := range flags {
		name := f.Names()[0]
		if v, ok := c.Generic(name).(flag.Value); ok && v != nil {
			m[name] = v.String()
		}
	}
	return m
}

// printSettings prints each setting that has a value, and where it comes
// from. Secrets show as "set", never their value.
func printSettings(out io.Writer, c *cli.Context, cfg *Config, flags []cli.Flag, before map[string]string, secretsBefore map[*secretSource]auth.Secret) {
	secrets := map[string]*secretSource{}
	for _, s := range cfg.secrets {
		secrets[s.name] = s
	}
	after := flagValues(c, flags)
	if cfg.authTypeFromCloud {
		after["auth-type"] = cfg.authType
	}
	fmt.Fprintln(out, "imagefs configuration (secrets are never shown)")
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  SETTING\tVALUE\tFROM")
	for _, f := range flags {
		name := f.Names()[0]
		val, src := after[name], source(c, f)
		if s := secrets[name]; s != nil {
			if *s.dst == "" {
				continue
			}
			val = "set"
			switch {
			case s.credential:
				src = fmt.Sprintf("systemd credential %s (%s)", s.name, s.file)
			case s.file != "":
				src = fmt.Sprintf("file %s (%s)", s.file, source(c, flagNamed(flags, s.fileName())))
			case secretsBefore[s] == "":
				src = cloudSource(cfg, name)
			}
		} else if val == "" {
			continue
		} else if slices.Contains(cfg.defaulted, name) {
			src = "--os-default-domain (openstackclient's convention)"
		} else if before[name] != val && before[name] == "" {
			src = cloudSource(cfg, name)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", name, val, src)
	}
	tw.Flush()
}

// cloudSource names the clouds.yaml entry a setting was filled from.
func cloudSource(cfg *Config, name string) string {
	e, cloud := cfg.cloudFile, cfg.cloud
	if strings.HasPrefix(name, "service-") {
		e, cloud = cfg.serviceCloudFile, cfg.serviceCloud
	}
	f := e.Path
	if e.Secure {
		f += " (or " + filepath.Join(filepath.Dir(e.Path), "secure.yaml") + ")"
	}
	return fmt.Sprintf("clouds.yaml %s, cloud %q", f, cloud)
}

// flagNamed is the flag called name (nil if none).
func flagNamed(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if f.Names()[0] == name {
			return f
		}
	}
	return nil
}

// source says where flag f's value comes from: the command line, an
// environment variable (the first one set, as urfave/cli takes it), or the
// default.
func source(c *cli.Context, f cli.Flag) string {
	if f == nil {
		return "?"
	}
	name := f.Names()[0]
	if onCommandLine(name, os.Args[1:]) {
		return "flag --" + name
	}
	if c.IsSet(name) {
		if ef, ok := f.(interface{ GetEnvVars() []string }); ok {
			for _, e := range ef.GetEnvVars() {
				if _, ok := os.LookupEnv(e); ok {
					return "environment " + e
				}
			}
		}
	}
	return "default"
}

// onCommandLine reports whether args give flag name (-name, --name,
// --name=v), before a "--".
func onCommandLine(name string, args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/auth"
)

// Config is the whole configuration of a mount: one nested part per package.
type Config struct {
	Auth auth.Config

	Container  string // from CONTAINER[/PREFIX]
	Prefix     string
	Mountpoint string

	SegmentSize   string // with a unit: 64MiB
	UploadWorkers int
	AttrTTL       time.Duration
	RetryBudget   time.Duration
	AllowOther    bool
	UID, GID      int
	Shutdown      time.Duration

	LogFormat string
	LogLevel  string
	DebugFUSE bool
}

// password is kept apart: flag values are plain strings.
var password string

// authFlags are the standard OpenStack settings, as flags and OS_* variables.
func authFlags(c *Config) []cli.Flag {
	a := &c.Auth
	s := func(name, env, usage string, dst *string) cli.Flag {
		return &cli.StringFlag{Name: name, EnvVars: []string{env}, Usage: usage, Destination: dst, Category: "OpenStack"}
	}
	return []cli.Flag{
		s("os-auth-url", "OS_AUTH_URL", "Keystone v3 URL", &a.AuthURL),
		s("os-username", "OS_USERNAME", "user name", &a.Username),
		s("os-user-id", "OS_USER_ID", "user id (instead of the name)", &a.UserID),
		&cli.StringFlag{Name: "os-password", EnvVars: []string{"OS_PASSWORD"}, Category: "OpenStack",
			Usage: "password (prefer the environment: a flag shows in ps)", Destination: &password},
		s("os-user-domain-name", "OS_USER_DOMAIN_NAME", "domain of the user", &a.UserDomainName),
		s("os-user-domain-id", "OS_USER_DOMAIN_ID", "domain id of the user", &a.UserDomainID),
		s("os-project-name", "OS_PROJECT_NAME", "project (tenant) name", &a.ProjectName),
		s("os-project-id", "OS_PROJECT_ID", "project id", &a.ProjectID),
		s("os-project-domain-name", "OS_PROJECT_DOMAIN_NAME", "domain of the project", &a.ProjectDomainName),
		s("os-project-domain-id", "OS_PROJECT_DOMAIN_ID", "domain id of the project", &a.ProjectDomainID),
		s("os-region-name", "OS_REGION_NAME", "catalog region of the object-store endpoint", &a.Region),
		&cli.StringFlag{Name: "os-interface", EnvVars: []string{"OS_INTERFACE"}, Category: "OpenStack",
			Usage: "endpoint interface: public, internal or admin", Value: "public", Destination: &a.Interface},
		s("os-storage-url", "OS_STORAGE_URL", "object-store URL, overriding the catalog", &a.StorageURL),
	}
}

// mountFlags are all the flags of `imagefs mount`: one function per area.
func mountFlags(c *Config) []cli.Flag {
	var fl []cli.Flag
	fl = append(fl, authFlags(c)...)
	fl = append(fl, writeFlags(c)...)
	fl = append(fl, readFlags(c)...)
	fl = append(fl, commonFlags(c)...)
	return fl
}

// writeFlags configure the write path (segments.Pool, segments.Writer).
func writeFlags(c *Config) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "segment-size", EnvVars: []string{"IMAGEFS_SEGMENT_SIZE"}, Value: "32MiB", Destination: &c.SegmentSize,
			Usage: "size of the segments large files are cut into (memory: (upload-workers+1) × segment-size)"},
		&cli.IntFlag{Name: "upload-workers", EnvVars: []string{"IMAGEFS_UPLOAD_WORKERS"}, Value: 4, Destination: &c.UploadWorkers,
			Usage: "segments uploaded in parallel, for all files together"},
	}
}

// readFlags configure the read path (segments.Reader, cache).
func readFlags(c *Config) []cli.Flag {
	return nil
}

// commonFlags configure the mount as a whole.
func commonFlags(c *Config) []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "attr-ttl", EnvVars: []string{"IMAGEFS_ATTR_TTL"}, Value: time.Second, Destination: &c.AttrTTL,
			Usage: "how long file metadata is cached"},
		&cli.DurationFlag{Name: "retry-budget", EnvVars: []string{"IMAGEFS_RETRY_BUDGET"}, Value: 3 * time.Minute, Destination: &c.RetryBudget,
			Usage: "how long one Swift operation is retried (5xx, 429, timeouts, resets) before it fails with EIO"},
		&cli.BoolFlag{Name: "allow-other", EnvVars: []string{"IMAGEFS_ALLOW_OTHER"}, Destination: &c.AllowOther,
			Usage: "let other users (qemu, libvirt) use the mount"},
		&cli.IntFlag{Name: "uid", EnvVars: []string{"IMAGEFS_UID"}, Value: os.Getuid(), Destination: &c.UID, Usage: "owner of the files"},
		&cli.IntFlag{Name: "gid", EnvVars: []string{"IMAGEFS_GID"}, Value: os.Getgid(), Destination: &c.GID, Usage: "group of the files"},
		&cli.DurationFlag{Name: "shutdown-timeout", EnvVars: []string{"IMAGEFS_SHUTDOWN_TIMEOUT"}, Value: 30 * time.Second, Destination: &c.Shutdown,
			Usage: "on SIGTERM, how long to wait for files still open before abandoning their uploads"},
		&cli.StringFlag{Name: "log-format", EnvVars: []string{"IMAGEFS_LOG_FORMAT"}, Value: "text", Destination: &c.LogFormat,
			Usage: "text or json"},
		&cli.StringFlag{Name: "log-level", EnvVars: []string{"IMAGEFS_LOG_LEVEL"}, Value: "info", Destination: &c.LogLevel,
			Usage: "debug, info, warn or error"},
		&cli.BoolFlag{Name: "debug-fuse", Destination: &c.DebugFUSE, Usage: "log every FUSE request"},
	}
}

// parseSize reads a byte count with an optional unit (K, M, G, T; KiB...;
// powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	up := strings.ToUpper(t)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"TIB", 1 << 40}, {"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10},
		{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(up, u.suffix) {
			mult = u.m
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 32MiB, 1G, 1048576)", s)
	}
	return n * mult, nil
}

// Validate reports every problem with the mount settings at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Auth.Validate(); err != nil {
		errs = append(errs, err)
	}
	if n, err := parseSize(c.SegmentSize); err != nil {
		errs = append(errs, fmt.Errorf("--segment-size: %w", err))
	} else if n < 1<<20 || n > 5<<30 {
		errs = append(errs, fmt.Errorf("--segment-size %s: must be between 1MiB and 5GiB", c.SegmentSize))
	}
	if c.UploadWorkers < 1 || c.UploadWorkers > 64 {
		errs = append(errs, fmt.Errorf("--upload-workers %d: must be between 1 and 64", c.UploadWorkers))
	}
	if c.RetryBudget < 0 {
		errs = append(errs, fmt.Errorf("--retry-budget %v: must not be negative", c.RetryBudget))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// newLogger builds the daemon's logger; logs go to stderr (journald).
func newLogger(c *Config) *slog.Logger {
	lvl, _ := parseLevel(c.LogLevel)
	o := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, o))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, o))
}

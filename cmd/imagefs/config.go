package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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

	Read ReadConfig

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

// ReadConfig is the read path's part of the configuration.
type ReadConfig struct {
	CacheDir        string
	CacheSize       string // sizes with a unit: 10GiB
	Memory          string
	ReadAhead       string
	KernelReadAhead string
	StallTimeout    time.Duration
}

// readFlags configure the read path (segments.Reader, cache).
func readFlags(c *Config) []cli.Flag {
	r := &c.Read
	return []cli.Flag{
		&cli.StringFlag{Name: "cache-dir", EnvVars: []string{"IMAGEFS_CACHE_DIR"}, Destination: &r.CacheDir, Category: "Reading",
			Usage: "persistent block cache directory, kept across restarts and remounts (empty: memory only); one per mount, outside the mountpoint"},
		&cli.StringFlag{Name: "cache-size", EnvVars: []string{"IMAGEFS_CACHE_SIZE"}, Value: "10GiB", Destination: &r.CacheSize, Category: "Reading",
			Usage: "bytes the block cache may use in --cache-dir"},
		&cli.StringFlag{Name: "read-memory", EnvVars: []string{"IMAGEFS_READ_MEMORY"}, Value: "256MiB", Destination: &r.Memory, Category: "Reading",
			Usage: "memory for cached and prefetched blocks, all open files together (prefetch is dropped when it is used up)"},
		&cli.StringFlag{Name: "read-ahead", EnvVars: []string{"IMAGEFS_READ_AHEAD"}, Value: "64MiB", Destination: &r.ReadAhead, Category: "Reading",
			Usage: "how far ahead of a sequential reader one open file may prefetch (the window starts at 1MiB and doubles up to this)"},
		&cli.StringFlag{Name: "kernel-read-ahead", EnvVars: []string{"IMAGEFS_KERNEL_READ_AHEAD"}, Value: "16MiB", Destination: &r.KernelReadAhead, Category: "Reading",
			Usage: "the kernel's readahead for the mount (read_ahead_kb), set after mounting; 0 keeps the kernel's default"},
		&cli.DurationFlag{Name: "read-stall-timeout", EnvVars: []string{"IMAGEFS_READ_STALL_TIMEOUT"}, Value: 30 * time.Second, Destination: &r.StallTimeout, Category: "Reading",
			Usage: "a GET whose body sends nothing for this long is cut and resumed on a new connection"},
	}
}

// Sizes of the read path, parsed; Validate has checked them.
func (r *ReadConfig) sizes() (cacheSize, memory, readAhead, kernel int64) {
	cacheSize, _ = parseSize(r.CacheSize)
	memory, _ = parseSize(r.Memory)
	readAhead, _ = parseSize(r.ReadAhead)
	kernel, _ = parseSize(r.KernelReadAhead)
	return
}

// validate reports the problems of the read settings.
func (r *ReadConfig) validate(mountpoint string) []error {
	var errs []error
	size := func(flag, v string, lo, hi int64) int64 {
		n, err := parseSize(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", flag, err))
			return -1
		}
		if n < lo || n > hi {
			errs = append(errs, fmt.Errorf("--%s %s: must be between %s and %s", flag, v, human(lo), human(hi)))
			return -1
		}
		return n
	}
	size("cache-size", r.CacheSize, 64<<20, 1<<50)
	mem := size("read-memory", r.Memory, 16<<20, 1<<40)
	ra := size("read-ahead", r.ReadAhead, 1<<20, 1<<40)
	if mem > 0 && ra > mem/2 {
		errs = append(errs, fmt.Errorf("--read-ahead %s: must be at most half of --read-memory (%s)", r.ReadAhead, r.Memory))
	}
	if n, err := parseSize(r.KernelReadAhead); err != nil {
		errs = append(errs, fmt.Errorf("--kernel-read-ahead: %w", err))
	} else if n != 0 && (n < 128<<10 || n > 1<<30) {
		errs = append(errs, fmt.Errorf("--kernel-read-ahead %s: must be 0 or between 128KiB and 1GiB", r.KernelReadAhead))
	}
	if r.StallTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--read-stall-timeout %v: must be at least 1s", r.StallTimeout))
	}
	if r.CacheDir != "" && mountpoint != "" {
		cd, _ := filepath.Abs(r.CacheDir)
		mp, _ := filepath.Abs(mountpoint)
		if cd == mp || strings.HasPrefix(cd, mp+"/") {
			errs = append(errs, fmt.Errorf("--cache-dir %s is inside the mountpoint %s: it must be on a local disk", r.CacheDir, mountpoint))
		}
	}
	return errs
}

// human prints a size with the largest binary unit that divides it.
func human(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
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
	errs = append(errs, c.Read.validate(c.Mountpoint)...)
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

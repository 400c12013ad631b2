package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
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

	authType     string // --auth-type, parsed by resolveAuth
	cloud        string // --os-cloud: clouds.yaml entry
	serviceCloud string // --service-cloud: clouds.yaml entry of the service user
	tls          auth.TLSOptions
	secrets      []*secretSource // authFlags' secrets, for their files and systemd credentials

	Container  string // from CONTAINER[/PREFIX]
	Prefix     string
	Mountpoint string

	Write WriteConfig

	AttrTTL     time.Duration
	RetryBudget time.Duration
	AllowOther  bool
	UID, GID    int
	Shutdown    time.Duration

	Read     ReadConfig
	Files    FilesConfig
	Versions VersionsConfig

	LogFormat string
	LogLevel  string
	DebugFUSE bool
}

// authFlags are the standard OpenStack settings, as flags and OS_*
// variables (flag > environment > clouds.yaml), the auth mode, and the
// service user in the conventions of Nova's [service_user] group
// (--service-* flags, IMAGEFS_SERVICE_* variables).
func authFlags(c *Config) []cli.Flag {
	a := &c.Auth
	s := func(cat, name, env, usage string, dst *string) cli.Flag {
		return &cli.StringFlag{Name: name, EnvVars: []string{env}, Usage: usage, Destination: dst, Category: cat}
	}
	c.secrets = nil
	secret := c.secretFlag // and withSecretFiles adds its --NAME-file (secrets.go)
	const osc, svc, mode = "OpenStack", "Service user (trust and service-token modes)", "Auth mode"
	sv := &a.Service
	return c.withSecretFiles([]cli.Flag{
		&cli.StringFlag{Name: "auth-type", EnvVars: []string{"IMAGEFS_AUTH_TYPE", "OS_AUTH_TYPE"}, Destination: &c.authType, Category: mode,
			Usage: "password, application-credential (v3applicationcredential), trust or service-token; default: inferred from what is set (a trust id, an application credential, a token, else a password)"},
		s(osc, "os-cloud", "OS_CLOUD", "entry of clouds.yaml to read (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/, /etc/openstack/); flags and OS_* variables take precedence", &c.cloud),
		s(osc, "os-auth-url", "OS_AUTH_URL", "Keystone v3 URL", &a.AuthURL),
		s(osc, "os-username", "OS_USERNAME", "user name", &a.Username),
		s(osc, "os-user-id", "OS_USER_ID", "user id (instead of the name)", &a.UserID),
		secret(osc, "os-password", "OS_PASSWORD", "password", &a.Password),
		s(osc, "os-user-domain-name", "OS_USER_DOMAIN_NAME", "domain of the user", &a.UserDomainName),
		s(osc, "os-user-domain-id", "OS_USER_DOMAIN_ID", "domain id of the user", &a.UserDomainID),
		s(osc, "os-project-name", "OS_PROJECT_NAME", "project (tenant) name", &a.ProjectName),
		s(osc, "os-project-id", "OS_PROJECT_ID", "project id", &a.ProjectID),
		s(osc, "os-project-domain-name", "OS_PROJECT_DOMAIN_NAME", "domain of the project", &a.ProjectDomainName),
		s(osc, "os-project-domain-id", "OS_PROJECT_DOMAIN_ID", "domain id of the project", &a.ProjectDomainID),
		s(osc, "os-application-credential-id", "OS_APPLICATION_CREDENTIAL_ID", "application credential id", &a.ApplicationCredentialID),
		s(osc, "os-application-credential-name", "OS_APPLICATION_CREDENTIAL_NAME", "application credential name (with the user)", &a.ApplicationCredentialName),
		secret(osc, "os-application-credential-secret", "OS_APPLICATION_CREDENTIAL_SECRET", "application credential secret", &a.ApplicationCredentialSecret),
		s(osc, "os-trust-id", "OS_TRUST_ID", "trust to consume (trust mode; see 'imagefs trust create')", &a.TrustID),
		secret(osc, "os-token", "OS_TOKEN", "user token of service-token mode and 'trust create'", &a.Token),
		s(osc, "os-region-name", "OS_REGION_NAME", "catalog region of the object-store endpoint", &a.Region),
		s(osc, "os-interface", "OS_INTERFACE", "endpoint interface: public (default), internal or admin", &a.Interface),
		s(osc, "os-storage-url", "OS_STORAGE_URL", "object-store URL, overriding the catalog", &a.StorageURL),
		s(osc, "os-cacert", "OS_CACERT", "PEM bundle of the CAs that signed Keystone's and Swift's TLS certificates (instead of the system's)", &c.tls.CACert),
		s(osc, "os-cert", "OS_CERT", "client certificate (PEM), for endpoints that require one", &c.tls.Cert),
		s(osc, "os-key", "OS_KEY", "key of the client certificate (PEM)", &c.tls.Key),
		&cli.BoolFlag{Name: "insecure", EnvVars: []string{"OS_INSECURE"}, Destination: &c.tls.Insecure, Category: osc,
			Usage: "do not verify Keystone's and Swift's TLS certificates (for tests only: anyone on the path can read the tokens)"},

		s(svc, "service-cloud", "IMAGEFS_SERVICE_CLOUD", "entry of clouds.yaml with the service user", &c.serviceCloud),
		s(svc, "service-auth-url", "IMAGEFS_SERVICE_AUTH_URL", "Keystone URL of the service user (default: --os-auth-url)", &a.ServiceAuthURL),
		s(svc, "service-username", "IMAGEFS_SERVICE_USERNAME", "service user name (needs Keystone's service role for service tokens)", &sv.Username),
		s(svc, "service-user-id", "IMAGEFS_SERVICE_USER_ID", "service user id", &sv.UserID),
		secret(svc, "service-password", "IMAGEFS_SERVICE_PASSWORD", "service user's password", &sv.Password),
		s(svc, "service-user-domain-name", "IMAGEFS_SERVICE_USER_DOMAIN_NAME", "domain of the service user", &sv.UserDomainName),
		s(svc, "service-user-domain-id", "IMAGEFS_SERVICE_USER_DOMAIN_ID", "domain id of the service user", &sv.UserDomainID),
		s(svc, "service-project-name", "IMAGEFS_SERVICE_PROJECT_NAME", "service user's project (service-token mode)", &sv.ProjectName),
		s(svc, "service-project-id", "IMAGEFS_SERVICE_PROJECT_ID", "service user's project id", &sv.ProjectID),
		s(svc, "service-project-domain-name", "IMAGEFS_SERVICE_PROJECT_DOMAIN_NAME", "domain of the service user's project", &sv.ProjectDomainName),
		s(svc, "service-project-domain-id", "IMAGEFS_SERVICE_PROJECT_DOMAIN_ID", "domain id of the service user's project", &sv.ProjectDomainID),
		s(svc, "service-application-credential-id", "IMAGEFS_SERVICE_APPLICATION_CREDENTIAL_ID", "service user's application credential (service-token mode only)", &sv.ApplicationCredentialID),
		s(svc, "service-application-credential-name", "IMAGEFS_SERVICE_APPLICATION_CREDENTIAL_NAME", "service user's application credential name", &sv.ApplicationCredentialName),
		secret(svc, "service-application-credential-secret", "IMAGEFS_SERVICE_APPLICATION_CREDENTIAL_SECRET", "service user's application credential secret", &sv.ApplicationCredentialSecret),

		s(mode, "reseller-prefix", "IMAGEFS_RESELLER_PREFIX", "service-token mode: account prefix replacing the catalog's AUTH_ (default IMAGE_)", &a.ResellerPrefix),
		&cli.DurationFlag{Name: "allow-expired-window", EnvVars: []string{"IMAGEFS_ALLOW_EXPIRED_WINDOW"}, Value: 48 * time.Hour, Destination: &a.AllowExpiredWindow, Category: mode,
			Usage: "service-token mode: Keystone's [token] allow_expired_window, how long after its expiry the user token stays usable"},
		&cli.DurationFlag{Name: "expiry-warning", EnvVars: []string{"IMAGEFS_EXPIRY_WARNING"}, Value: 7 * 24 * time.Hour, Destination: &a.ExpiryWarning, Category: mode,
			Usage: "warn this long before the application credential expires (or the allow-expired window closes; then at most a quarter of it)"},
		&cli.DurationFlag{Name: "token-renew-margin", EnvVars: []string{"IMAGEFS_TOKEN_RENEW_MARGIN"}, Value: 5 * time.Minute, Destination: &a.RenewMargin, Category: mode,
			Usage: "renew tokens at least this long before they expire (10% of the lifetime if more; half of it for short-lived tokens)"},
	})
}

// secretValue is a flag value that fills an auth.Secret and never shows
// it (help texts print a flag's value as its default).
type secretValue struct{ dst *auth.Secret }

func (v *secretValue) Set(s string) error { *v.dst = auth.Secret(s); return nil }
func (v *secretValue) String() string     { return "" }

// resolveAuth completes the auth settings: systemd credentials, then
// clouds.yaml, fill what the flags and the environment left empty, and the
// mode is parsed.
func (c *Config) resolveAuth() error {
	var errs []error
	if err := c.secretsFromCredentials(); err != nil {
		errs = append(errs, err)
	}
	if c.cloud != "" {
		tc, err := fromCloud(c.cloud, &c.Auth, &c.Auth.Identity, c.tls)
		if err != nil {
			errs = append(errs, err)
		}
		c.Auth.TLS = tc
	} else {
		tc, err := c.tls.Config()
		if err != nil {
			errs = append(errs, err)
		}
		c.Auth.TLS = tc
	}
	if c.serviceCloud != "" {
		var scratch auth.Config
		if _, err := fromCloud(c.serviceCloud, &scratch, &c.Auth.Service, c.tls); err != nil {
			errs = append(errs, fmt.Errorf("--service-cloud: %w", err))
		}
		if c.Auth.ServiceAuthURL == "" {
			c.Auth.ServiceAuthURL = scratch.AuthURL
		}
	}
	m, err := auth.ParseMode(c.authType)
	if err != nil {
		errs = append(errs, fmt.Errorf("--auth-type (IMAGEFS_AUTH_TYPE, OS_AUTH_TYPE): %w", err))
	}
	c.Auth.Mode = m
	return errors.Join(errs...)
}

// mountFlags are all the flags of `imagefs mount`: one function per area.
func mountFlags(c *Config) []cli.Flag {
	var fl []cli.Flag
	fl = append(fl, authFlags(c)...)
	fl = append(fl, writeFlags(c)...)
	fl = append(fl, readFlags(c)...)
	fl = append(fl, commonFlags(c)...)
	fl = append(fl, filesFlags(c)...)
	fl = append(fl, versionsFlags(c)...)
	return fl
}

// WriteConfig is the write path's part of the configuration.
type WriteConfig struct {
	SegmentSize   string // with a unit: 64MiB
	UploadWorkers int
	StagingDir    string
	StagingSize   string
	SHA256        bool
}

// writeFlags configure the write path (segments.Pool, segments.Writer).
func writeFlags(c *Config) []cli.Flag {
	w := &c.Write
	return []cli.Flag{
		&cli.StringFlag{Name: "segment-size", EnvVars: []string{"IMAGEFS_SEGMENT_SIZE"}, Value: "32MiB", Destination: &w.SegmentSize, Category: "Writing",
			Usage: "size of the segments large files are cut into (memory: (upload-workers+1) × segment-size)"},
		&cli.IntFlag{Name: "upload-workers", EnvVars: []string{"IMAGEFS_UPLOAD_WORKERS"}, Value: 4, Destination: &w.UploadWorkers, Category: "Writing",
			Usage: "segments uploaded in parallel, for all files together"},
		&cli.StringFlag{Name: "staging-dir", EnvVars: []string{"IMAGEFS_STAGING_DIR"}, Destination: &w.StagingDir, Category: "Writing",
			Usage: "local directory for files written out of order (qemu-img convert -O qcow2): such a file is kept there and uploaded when closed; without it, such writes fail with ESPIPE"},
		&cli.StringFlag{Name: "staging-size", EnvVars: []string{"IMAGEFS_STAGING_SIZE"}, Value: "32GiB", Destination: &w.StagingSize, Category: "Writing",
			Usage: "bytes all staged files may use together in --staging-dir; a write beyond fails with ENOSPC"},
		&cli.BoolFlag{Name: "sha256", EnvVars: []string{"IMAGEFS_SHA256"}, Value: true, Destination: &w.SHA256, Category: "Writing",
			Usage: "compute each written file's SHA-256 (object metadata, xattr user.imagefs.sha256); --sha256=false saves ~0.7 CPU seconds per GiB written"},
	}
}

// validate reports the problems of the write settings.
func (w *WriteConfig) validate(mountpoint string) []error {
	var errs []error
	if n, err := parseSize(w.SegmentSize); err != nil {
		errs = append(errs, fmt.Errorf("--segment-size: %w", err))
	} else if n < 1<<20 || n > 5<<30 {
		errs = append(errs, fmt.Errorf("--segment-size %s: must be between 1MiB and 5GiB", w.SegmentSize))
	}
	if w.UploadWorkers < 1 || w.UploadWorkers > 64 {
		errs = append(errs, fmt.Errorf("--upload-workers %d: must be between 1 and 64", w.UploadWorkers))
	}
	if n, err := parseSize(w.StagingSize); err != nil {
		errs = append(errs, fmt.Errorf("--staging-size: %w", err))
	} else if n < 64<<20 {
		errs = append(errs, fmt.Errorf("--staging-size %s: must be at least 64MiB", w.StagingSize))
	}
	if err := notInMount("staging-dir", w.StagingDir, mountpoint); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// notInMount rejects a local directory flag that points into the mount.
func notInMount(flag, dir, mountpoint string) error {
	if dir == "" || mountpoint == "" {
		return nil
	}
	d, _ := filepath.Abs(dir)
	mp, _ := filepath.Abs(mountpoint)
	if d == mp || strings.HasPrefix(d, mp+"/") {
		return fmt.Errorf("--%s %s is inside the mountpoint %s: it must be on a local disk", flag, dir, mountpoint)
	}
	return nil
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
	if err := notInMount("cache-dir", r.CacheDir, mountpoint); err != nil {
		errs = append(errs, err)
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
// powers of 1024). Counts that do not fit in an int64 are an error.
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
	if (errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(t, "-")) || (err == nil && n > math.MaxInt64/mult) {
		return 0, fmt.Errorf("%q is too large (at most 9223372036854775807 bytes, just under 8EiB)", s)
	}
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
	errs = append(errs, c.Write.validate(c.Mountpoint)...)
	errs = append(errs, c.Read.validate(c.Mountpoint)...)
	errs = append(errs, c.Files.validate()...)
	errs = append(errs, c.Versions.validate()...)
	for _, id := range []struct {
		flag string
		v    int
	}{{"uid", c.UID}, {"gid", c.GID}} {
		// The kernel's ids are 32 bits, and (uid_t)-1 means "no change":
		// a larger number would wrap around (4294967296 would be root).
		if id.v < 0 || id.v >= math.MaxUint32 {
			errs = append(errs, fmt.Errorf("--%s %d: must be between 0 and %d", id.flag, id.v, math.MaxUint32-1))
		}
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

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/fs"

	"github.com/imagefs/imagefs/auth"
)

// Config is the whole configuration of a mount: one nested part per package.
type Config struct {
	Auth auth.Config

	authType     string // --auth-type, parsed by resolveAuth
	cloud        string // --os-cloud: clouds.yaml entry
	serviceCloud string // --service-cloud: clouds.yaml entry of the service user
	// what resolveAuth read from clouds.yaml
	cloudFile, serviceCloudFile cloudEntry
	authTypeFromCloud           bool     // authType is the cloud's auth_type
	defaultDomain               string   // --os-default-domain
	defaulted                   []string // the flags filled from it
	tls                         auth.TLSOptions
	secrets                     []*secretSource // authFlags' secrets, for their files and systemd credentials
	SecretPoll                  time.Duration   // --secret-poll-interval (rotate.go)

	Account    bool   // --account: the whole account, no CONTAINER argument
	Container  string // from CONTAINER[/PREFIX]
	Prefix     string
	Mountpoint string

	Write WriteConfig

	AttrTTL     time.Duration
	ListTTL     time.Duration // 0: AttrTTL
	RetryBudget time.Duration
	AllowOther  bool
	UID, GID    int
	Shutdown    time.Duration
	// HolderTimeout bounds how long a stop serves other mount namespaces
	// that still hold the mount (VMs); 0: until they let go (shutdown.go).
	HolderTimeout time.Duration

	ReadOnly        bool
	CreateContainer bool
	StatfsTTL       time.Duration

	Read     ReadConfig
	Files    FilesConfig
	Versions VersionsConfig
	Metrics  MetricsConfig
	Peer     PeerConfig
	RunDir   string // control sockets (status.go)

	LogFormat string
	LogLevel  Level
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
		&cli.StringFlag{Name: "os-default-domain", EnvVars: []string{"OS_DEFAULT_DOMAIN"}, Value: "default", Destination: &c.defaultDomain, Category: osc,
			Usage: "domain id of a password user (and its project) given by name without a domain, as openstackclient does"},
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
		e, err := fromCloud(c.cloud, &c.Auth, &c.Auth.Identity, c.tls)
		if err != nil {
			errs = append(errs, err)
		}
		c.Auth.TLS, c.cloudFile = e.TLS, e
		if c.authType == "" {
			// keystoneauth reads auth_type from the entry too.
			c.authType, c.authTypeFromCloud = e.AuthType, e.AuthType != ""
		}
	} else {
		tc, err := c.tls.Config()
		if err != nil {
			errs = append(errs, err)
		}
		c.Auth.TLS = tc
	}
	if c.serviceCloud != "" {
		var scratch auth.Config
		e, err := fromCloud(c.serviceCloud, &scratch, &c.Auth.Service, c.tls)
		if err != nil {
			errs = append(errs, fmt.Errorf("--service-cloud: %w", err))
		}
		c.serviceCloudFile = e
		if c.Auth.ServiceAuthURL == "" {
			c.Auth.ServiceAuthURL = scratch.AuthURL
		}
	}
	m, err := auth.ParseMode(c.authType)
	if err != nil && c.authTypeFromCloud {
		errs = append(errs, fmt.Errorf("clouds.yaml %s, cloud %q, auth_type: %w", c.cloudFile.Path, c.cloud, err))
	} else if err != nil {
		errs = append(errs, fmt.Errorf("--auth-type (IMAGEFS_AUTH_TYPE, OS_AUTH_TYPE): %w", err))
	}
	c.Auth.Mode = m
	c.applyDefaultDomain()
	return errors.Join(errs...)
}

// applyDefaultDomain is openstackclient's convention (osc-lib's
// _auth_default_domain) for the password plugins: a user without a user
// domain, and a project without a project domain, are in the domain
// --os-default-domain (OS_DEFAULT_DOMAIN, "default"). Only for the OS_*
// user of the password and trust modes, as openstackclient.
func (c *Config) applyDefaultDomain() {
	a, id := &c.Auth, &c.Auth.Identity
	mode := a.Mode
	if mode == "" {
		mode = a.InferMode()
	}
	if c.defaultDomain == "" || id.ApplicationCredentialID != "" || id.ApplicationCredentialName != "" ||
		(mode != auth.ModePassword && mode != auth.ModeTrust) || (mode == auth.ModeTrust && a.Service != (auth.Identity{})) {
		return
	}
	if id.Username != "" && id.UserDomainID == "" && id.UserDomainName == "" {
		id.UserDomainID = c.defaultDomain
		c.defaulted = append(c.defaulted, "os-user-domain-id")
	}
	if id.ProjectName != "" && id.ProjectDomainID == "" && id.ProjectDomainName == "" {
		id.ProjectDomainID = c.defaultDomain
		c.defaulted = append(c.defaulted, "os-project-domain-id")
	}
}

// mountFlags are all the flags of `imagefs mount`: one function per area.
func mountFlags(c *Config) []cli.Flag {
	var fl []cli.Flag
	fl = append(fl, authFlags(c)...)
	fl = append(fl, rotationFlags(c)...)
	fl = append(fl, writeFlags(c)...)
	fl = append(fl, readFlags(c)...)
	fl = append(fl, commonFlags(c)...)
	fl = append(fl, filesFlags(c)...)
	fl = append(fl, versionsFlags(c)...)
	fl = append(fl, metricsFlags(c)...)
	fl = append(fl, peerFlags(c)...)
	fl = append(fl, accountFlags(c)...)
	return fl
}

// WriteConfig is the write path's part of the configuration.
type WriteConfig struct {
	SegmentSize   Size
	UploadWorkers int
	StagingDir    string
	StagingSize   Size
	SHA256        bool
	MD5           bool
	SHA512        bool
}

// writeFlags configure the write path (segments.Pool, segments.Writer).
func writeFlags(c *Config) []cli.Flag {
	w := &c.Write
	return []cli.Flag{
		newSettingFlag("Writing", "segment-size", "IMAGEFS_SEGMENT_SIZE", "32MiB", &w.SegmentSize,
			"size of the segments large files are cut into (memory: (upload-workers+1) × segment-size)"),
		&cli.IntFlag{Name: "upload-workers", EnvVars: []string{"IMAGEFS_UPLOAD_WORKERS"}, Value: 4, Destination: &w.UploadWorkers, Category: "Writing",
			Usage: "segments uploaded in parallel, for all files together"},
		&cli.StringFlag{Name: "staging-dir", EnvVars: []string{"IMAGEFS_STAGING_DIR"}, Destination: &w.StagingDir, Category: "Writing",
			Usage: "local directory for files written out of order (qemu-img convert -O qcow2): such a file is kept there and uploaded when closed; without it, such writes fail with ESPIPE"},
		newSettingFlag("Writing", "staging-size", "IMAGEFS_STAGING_SIZE", "32GiB", &w.StagingSize,
			"bytes all staged files may use together in --staging-dir; a write beyond fails with ENOSPC"),
		&cli.BoolFlag{Name: "sha256", EnvVars: []string{"IMAGEFS_SHA256"}, Value: true, Destination: &w.SHA256, Category: "Writing",
			Usage: "compute each written file's SHA-256 (object metadata, xattr user.imagefs.sha256); --sha256=false saves ~0.7 CPU seconds per GiB written"},
		&cli.BoolFlag{Name: "md5", EnvVars: []string{"IMAGEFS_MD5"}, Destination: &w.MD5, Category: "Writing",
			Usage: "also compute each written file's MD5 (xattr user.imagefs.md5), Glance's checksum; costs ~1.4 CPU seconds per GiB written"},
		&cli.BoolFlag{Name: "sha512", EnvVars: []string{"IMAGEFS_SHA512"}, Destination: &w.SHA512, Category: "Writing",
			Usage: "also compute each written file's SHA-512 (xattr user.imagefs.sha512), Glance's os_hash_value; costs ~1.3 CPU seconds per GiB written"},
	}
}

// validate reports the problems of the write settings.
func (w *WriteConfig) validate(mountpoint string) []error {
	var p problems
	p.add(sizeBetween("segment-size", w.SegmentSize, 1<<20, 5<<30))
	if w.UploadWorkers < 1 || w.UploadWorkers > 64 {
		p.add(fmt.Errorf("--upload-workers %d: must be between 1 and 64", w.UploadWorkers))
	}
	p.add(checkSize("staging-size", w.StagingSize, w.StagingSize.Bytes() >= 64<<20, "at least 64MiB"),
		notInMount("staging-dir", w.StagingDir, mountpoint))
	return p
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
	CacheSize       Size
	Memory          Size
	ReadAhead       Size
	KernelReadAhead Size
	StallTimeout    time.Duration
	Passthrough     bool
	BootTraces      bool
	TraceWindow     time.Duration
}

// readFlags configure the read path (segments.Reader, cache).
func readFlags(c *Config) []cli.Flag {
	r := &c.Read
	return []cli.Flag{
		&cli.StringFlag{Name: "cache-dir", EnvVars: []string{"IMAGEFS_CACHE_DIR"}, Destination: &r.CacheDir, Category: "Reading",
			Usage: "persistent block cache directory, kept across restarts and remounts (empty: memory only); one per mount, outside the mountpoint"},
		newSettingFlag("Reading", "cache-size", "IMAGEFS_CACHE_SIZE", "10GiB", &r.CacheSize,
			"bytes the block cache may use in --cache-dir"),
		newSettingFlag("Reading", "read-memory", "IMAGEFS_READ_MEMORY", "256MiB", &r.Memory,
			"memory for cached and prefetched blocks, all open files together (prefetch is dropped when it is used up)"),
		newSettingFlag("Reading", "read-ahead", "IMAGEFS_READ_AHEAD", "64MiB", &r.ReadAhead,
			"how far ahead of a sequential reader one open file may prefetch (the window starts at 1MiB and doubles up to this)"),
		newSettingFlag("Reading", "kernel-read-ahead", "IMAGEFS_KERNEL_READ_AHEAD", "16MiB", &r.KernelReadAhead,
			"the kernel's readahead for the mount (read_ahead_kb), set after mounting; 0 keeps the kernel's default"),
		&cli.DurationFlag{Name: "read-stall-timeout", EnvVars: []string{"IMAGEFS_READ_STALL_TIMEOUT"}, Value: 30 * time.Second, Destination: &r.StallTimeout, Category: "Reading",
			Usage: "a GET whose body sends nothing for this long is cut and resumed on a new connection"},
		&cli.BoolFlag{Name: "passthrough", EnvVars: []string{"IMAGEFS_PASSTHROUGH"}, Value: true, Destination: &r.Passthrough, Category: "Reading",
			Usage: "with --cache-dir, read-only opens of images whole in the cache are served by the kernel from the cache's file (FUSE passthrough, where the kernel allows it: Linux 6.9+ as root); --passthrough=false reads them through the daemon"},
		&cli.BoolFlag{Name: "boot-traces", EnvVars: []string{"IMAGEFS_BOOT_TRACES"}, Value: true, Destination: &r.BootTraces, Category: "Reading",
			Usage: "record what the first open of an image reads in its first seconds (a VM booting) as a trace in Swift, and prefetch it on later first opens, on any host"},
		&cli.DurationFlag{Name: "boot-trace-window", EnvVars: []string{"IMAGEFS_BOOT_TRACE_WINDOW"}, Value: fs.DefaultTraceWindow, Destination: &r.TraceWindow, Category: "Reading",
			Usage: "how long after the first open a boot trace records"},
	}
}

// passthrough reports whether the mount asks for FUSE passthrough: it
// serves the disk cache's files, so only with a --cache-dir.
func (r *ReadConfig) passthrough() bool { return r.Passthrough && r.CacheDir != "" }

// validate reports the problems of the read settings.
func (r *ReadConfig) validate(mountpoint string) []error {
	var p problems
	memErr := sizeBetween("read-memory", r.Memory, 16<<20, 1<<40)
	raErr := sizeBetween("read-ahead", r.ReadAhead, 1<<20, 1<<40)
	p.add(sizeBetween("cache-size", r.CacheSize, 64<<20, 1<<50), memErr, raErr)
	if memErr == nil && raErr == nil && r.ReadAhead.Bytes() > r.Memory.Bytes()/2 {
		p.add(fmt.Errorf("--read-ahead %s: must be at most half of --read-memory (%s)", r.ReadAhead, r.Memory))
	}
	k := r.KernelReadAhead.Bytes()
	p.add(checkSize("kernel-read-ahead", r.KernelReadAhead, k == 0 || (k >= 128<<10 && k <= 1<<30), "0 or between 128KiB and 1GiB"))
	if r.StallTimeout < time.Second {
		p.add(fmt.Errorf("--read-stall-timeout %v: must be at least 1s", r.StallTimeout))
	}
	p.add(notInMount("cache-dir", r.CacheDir, mountpoint))
	if r.TraceWindow != 0 && (r.TraceWindow < time.Second || r.TraceWindow > 10*time.Minute) {
		p.add(fmt.Errorf("--boot-trace-window %v: must be between 1s and 10m", r.TraceWindow))
	}
	return p
}

// commonFlags configure the mount as a whole.
func commonFlags(c *Config) []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "attr-ttl", EnvVars: []string{"IMAGEFS_ATTR_TTL"}, Value: time.Second, Destination: &c.AttrTTL,
			Usage: "how long file metadata is cached"},
		&cli.DurationFlag{Name: "list-ttl", EnvVars: []string{"IMAGEFS_LIST_TTL"}, Destination: &c.ListTTL,
			Usage: "how long a directory listing (its names and the sizes and times it shows) is cached; 0 means as --attr-ttl"},
		&cli.DurationFlag{Name: "retry-budget", EnvVars: []string{"IMAGEFS_RETRY_BUDGET"}, Value: 3 * time.Minute, Destination: &c.RetryBudget,
			Usage: "how long one Swift operation is retried (5xx, 429, timeouts, resets) before it fails with EIO"},
		&cli.BoolFlag{Name: "allow-other", EnvVars: []string{"IMAGEFS_ALLOW_OTHER"}, Destination: &c.AllowOther,
			Usage: "let other users (qemu, libvirt) use the mount"},
		&cli.BoolFlag{Name: "read-only", EnvVars: []string{"IMAGEFS_READ_ONLY"}, Destination: &c.ReadOnly,
			Usage: "mount read-only: every change fails at once with EROFS (for containers this user may only read, e.g. shared by a read ACL)"},
		&cli.BoolFlag{Name: "create-container", EnvVars: []string{"IMAGEFS_CREATE_CONTAINER"}, Destination: &c.CreateContainer,
			Usage: "create the container (and its _segments container) if it does not exist, instead of failing"},
		&cli.DurationFlag{Name: "statfs-ttl", EnvVars: []string{"IMAGEFS_STATFS_TTL"}, Value: 30 * time.Second, Destination: &c.StatfsTTL,
			Usage: "how long df's figures (the account's usage and quotas) are reused before Swift is asked again"},
		&cli.IntFlag{Name: "uid", EnvVars: []string{"IMAGEFS_UID"}, Value: os.Getuid(), Destination: &c.UID, Usage: "owner of the files"},
		&cli.IntFlag{Name: "gid", EnvVars: []string{"IMAGEFS_GID"}, Value: os.Getgid(), Destination: &c.GID, Usage: "group of the files"},
		&cli.DurationFlag{Name: "shutdown-timeout", EnvVars: []string{"IMAGEFS_SHUTDOWN_TIMEOUT"}, Value: 30 * time.Second, Destination: &c.Shutdown,
			Usage: "on SIGTERM, how long to wait for files still open before abandoning their uploads"},
		&cli.DurationFlag{Name: "holder-timeout", EnvVars: []string{"IMAGEFS_HOLDER_TIMEOUT"}, Destination: &c.HolderTimeout,
			Usage: "on SIGTERM, how long to keep serving processes of other mount namespaces (VMs) that still use the mount; 0: until they let go (a second SIGTERM or SIGINT stops at once)"},
		&cli.StringFlag{Name: "log-format", EnvVars: []string{"IMAGEFS_LOG_FORMAT"}, Value: "text", Destination: &c.LogFormat,
			Usage: "text or json"},
		newSettingFlag("", "log-level", "IMAGEFS_LOG_LEVEL", "info", &c.LogLevel, "debug, info, warn or error"),
		&cli.BoolFlag{Name: "debug-fuse", Destination: &c.DebugFUSE, Usage: "log every FUSE request"},
	}
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
	errs = append(errs, c.Metrics.validate()...)
	errs = append(errs, c.Peer.validate()...)
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
	if c.ReadOnly && c.CreateContainer {
		errs = append(errs, errors.New("--read-only and --create-container: a read-only mount cannot create its container; drop one of them"))
	}
	if c.ListTTL < 0 {
		errs = append(errs, fmt.Errorf("--list-ttl %v: must not be negative (0 means as --attr-ttl)", c.ListTTL))
	}
	if c.StatfsTTL < time.Second {
		errs = append(errs, fmt.Errorf("--statfs-ttl %v: must be at least 1s", c.StatfsTTL))
	}
	if c.SecretPoll < 0 {
		errs = append(errs, fmt.Errorf("--secret-poll-interval %v: must not be negative (0 reads the secret files only on SIGHUP)", c.SecretPoll))
	}
	if c.RetryBudget < 0 {
		errs = append(errs, fmt.Errorf("--retry-budget %v: must not be negative", c.RetryBudget))
	}
	if c.HolderTimeout < 0 {
		errs = append(errs, fmt.Errorf("--holder-timeout %v: must not be negative (0 waits until the other mount namespaces let go of the mount)", c.HolderTimeout))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if err := c.LogLevel.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// newLogger builds the daemon's logger; logs go to stderr (journald).
func newLogger(c *Config) *slog.Logger {
	o := &slog.HandlerOptions{Level: c.LogLevel.Level()}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, o))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, o))
}

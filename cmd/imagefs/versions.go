package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
)

// FilesConfig is what files and directories show: modes (the owner is
// --uid/--gid), see fs/attr.go.
type FilesConfig struct {
	FileMode, DirMode Mode
}

func filesFlags(c *Config) []cli.Flag {
	f := &c.Files
	return []cli.Flag{
		newSettingFlag("Permissions", "file-mode", "IMAGEFS_FILE_MODE", fmt.Sprintf("%04o", fs.DefaultFileMode), &f.FileMode,
			"permission bits of every file (octal); with --allow-other the kernel enforces them for every user: the default lets others read, never write"),
		newSettingFlag("Permissions", "dir-mode", "IMAGEFS_DIR_MODE", fmt.Sprintf("%04o", fs.DefaultDirMode), &f.DirMode,
			"permission bits of every directory (octal); the default lets others list, never create, rename or delete"),
	}
}

func (f *FilesConfig) validate() []error {
	var errs []error
	if err := f.FileMode.Err(); err != nil {
		errs = append(errs, fmt.Errorf("--file-mode %w", err))
	}
	if err := f.DirMode.Err(); err != nil {
		errs = append(errs, fmt.Errorf("--dir-mode %w", err))
	} else if f.DirMode.Bits()&0o100 == 0 {
		errs = append(errs, fmt.Errorf("--dir-mode %s: the owner needs the x bit to enter directories", f.DirMode))
	}
	return errs
}

// modes are the permission bits of files and directories.
func (f *FilesConfig) modes() (file, dir uint32) { return f.FileMode.Bits(), f.DirMode.Bits() }

// VersionsConfig is the versions' part of the configuration
// (segments.Versions): how long retired versions stay, leases, reaping.
type VersionsConfig struct {
	Grace        time.Duration
	LeaseTTL     time.Duration
	ReapInterval time.Duration
}

func versionsFlags(c *Config) []cli.Flag {
	v := &c.Versions
	return []cli.Flag{
		&cli.DurationFlag{Name: "version-grace", EnvVars: []string{"IMAGEFS_VERSION_GRACE"}, Value: segments.DefaultGrace, Destination: &v.Grace, Category: "Versions",
			Usage: "an overwritten or removed version is kept at least this long, and for as long as any host has it open"},
		&cli.DurationFlag{Name: "lease-ttl", EnvVars: []string{"IMAGEFS_LEASE_TTL"}, Value: segments.DefaultLeaseTTL, Destination: &v.LeaseTTL, Category: "Versions",
			Usage: "this host's lease on the versions it has open is refreshed every third of this; a host silent for longer no longer protects them"},
		&cli.DurationFlag{Name: "reap-interval", EnvVars: []string{"IMAGEFS_REAP_INTERVAL"}, Value: 10 * time.Minute, Destination: &v.ReapInterval, Category: "Versions",
			Usage: "how often this mount deletes the versions it retired once their grace period is over (0: never; imagefs gc does it for every host)"},
	}
}

func (v *VersionsConfig) validate() []error {
	var errs []error
	if v.Grace < time.Second {
		errs = append(errs, fmt.Errorf("--version-grace %v: must be at least 1s", v.Grace))
	}
	if v.LeaseTTL < 3*time.Second {
		errs = append(errs, fmt.Errorf("--lease-ttl %v: must be at least 3s", v.LeaseTTL))
	}
	if v.ReapInterval < 0 {
		errs = append(errs, fmt.Errorf("--reap-interval %v: must not be negative", v.ReapInterval))
	}
	return errs
}

// newVersions builds the owner of the mount's versions.
func newVersions(st segments.ObjectStore, container, prefix, mountpoint string, v VersionsConfig, log *slog.Logger) *segments.Versions {
	return segments.NewVersions(st, segments.VersionsOptions{
		Container:    container,
		Scope:        prefix,
		Host:         hostID(container, prefix, mountpoint),
		Grace:        v.Grace,
		LeaseTTL:     v.LeaseTTL,
		ReapInterval: v.ReapInterval,
		Log:          log,
		Failpoint:    failpoint(log),
	})
}

// hostID names this mount's lease and retirement records: the host name
// and a hash of what it mounts where (one host may mount a container
// twice). It is the same after a restart, so that a mount reaps what it
// retired before it restarted (and replaces its own dead lease).
func hostID(container, prefix, mountpoint string) string {
	h, _ := os.Hostname()
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		abs = mountpoint
	}
	sum := sha256.Sum256([]byte(container + "\x00" + prefix + "\x00" + abs))
	return h + "." + hex.EncodeToString(sum[:3])
}

// failpoint returns the crash hook of the tests: IMAGEFS_FAILPOINT names
// a step (e.g. rename-after-copy) at which the daemon kills itself with
// SIGKILL, as a crash would end it. Without the variable it is nil.
func failpoint(log *slog.Logger) func(string) {
	want := os.Getenv("IMAGEFS_FAILPOINT")
	if want == "" {
		return nil
	}
	return func(name string) {
		if name == want {
			log.Error("failpoint reached: killing the daemon", "failpoint", name)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // until the signal lands
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/auth"
	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
)

// Account mode (--account): the mount shows the whole account of the
// credentials, its containers as the top directories (see fs/account.go).
// Each container gets its own versions (a lease of this host in each
// container's segment container), made when the container is first used;
// the upkeep and the shutdown cover all of them.

func accountFlags(c *Config) []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "account", EnvVars: []string{"IMAGEFS_ACCOUNT"}, Destination: &c.Account,
			Usage: "mount the whole account: its containers are the top directories (segment containers hidden); then the only argument is MOUNTPOINT"},
	}
}

// mountRoot is the root node of a mount: a container's (fs.Root) or an
// account's (fs.Account).
type mountRoot interface {
	fusefs.InodeEmbedder
	MountOptions(fsName string, debug bool) *fusefs.Options
	Abort(ctx context.Context) int
	Uploads() int
	Mount(dir string, opts *fusefs.Options, lat fuse.LatencyMap) (*fuse.Server, error)
	Stats() fs.Stats
	UploadList() []fs.Upload
	Warm(ctx context.Context, rel string, o fs.WarmOptions) (fs.WarmProgress, error)
}

// upkeep runs the versions' leases and reaping for the mount's life.
type upkeep interface {
	Run(ctx context.Context) error
	Close(ctx context.Context) error
}

func (d *daemon) upkeep() upkeep {
	if d.account != nil {
		return d.account
	}
	return d.versions
}

// host names this mount's leases, for the log.
func (d *daemon) host() string {
	if d.account != nil {
		return "one per container"
	}
	return d.versions.Options().Host
}

// buildAccountFS builds the filesystem of an account mount: every
// container's objects and versions as the mount of that container alone
// would have them, made when the container is first used.
func (d *daemon) buildAccountFS(life context.Context) {
	d.account = segments.NewAccount(segments.AccountOptions{
		Store:     d.store,
		Container: func(name string) segments.ContainerOptions { return d.containerOptions(name, "") },
	})
	d.root = fs.NewAccount(life, fs.AccountOptions{Options: d.fsOptions(nil), Account: d.account, CreateContainers: d.cfg.CreateContainer})
}

// checkAccount explains to an operator why the account cannot be listed.
// raw is the store without retries.
func checkAccount(ctx context.Context, raw segments.ObjectStore, keeper *auth.Keeper) error {
	errStop := errors.New("stop")
	first := func(string) error { return errStop }
	err := raw.ListContainers(ctx, "", first)
	if err != nil && !errors.Is(err, errStop) && !errors.Is(err, segments.ErrAuth) {
		err = checkStore(raw).ListContainers(ctx, "", first)
	}
	if err == nil || errors.Is(err, errStop) {
		return nil
	}
	at := keeper.Current().StorageURL
	switch {
	case errors.Is(err, segments.ErrAuth) && keeper.Mode() == auth.ModeServiceToken:
		return fmt.Errorf("Swift refused the service token for the account at %s: the service user needs the role Swift's keystonemiddleware requires (service_token_roles, usually 'service'), and Swift must list the account's reseller prefix with its <PREFIX>_service_roles: %v", at, err)
	case errors.Is(err, segments.ErrAuth):
		return fmt.Errorf("Swift refused to list the account at %s: --account needs an operator role (member) on the project: %v", at, err)
	}
	if hint := auth.TLSProblem(err); hint != "" {
		return fmt.Errorf("cannot list the account at %s: %v: %s", at, err, hint)
	}
	return fmt.Errorf("cannot list the account at %s (tried for %v): %v", at, checkBudget, err)
}

// accountName is the account of a storage URL (AUTH_<project>), for the
// mount's source name.
func accountName(storageURL string) string {
	u, err := url.Parse(storageURL)
	if err != nil || path.Base(u.Path) == "/" || path.Base(u.Path) == "." {
		return "account"
	}
	return path.Base(u.Path)
}

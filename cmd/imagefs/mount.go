package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/auth"
	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
)

// runMount checks everything it can before mounting (so that bad input
// fails with a clear message and nothing mounted), mounts, and serves until
// a signal or an unmount. Each step is a function below, in this order.
func runMount(parent context.Context, cfg *Config) error {
	if err := checkArgs(cfg); err != nil {
		return err
	}
	claim, err := claimMountpoint(cfg.Mountpoint)
	if err != nil {
		return err
	}
	defer claim.Close()
	if p := os.Getenv("IMAGEFS_CPUPROFILE"); p != "" {
		// For the benchmarks (test/bench): a CPU profile of the whole run.
		stopProfile, err := startCPUProfile(p)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	d := &daemon{cfg: cfg, recent: &recentLog{}, retries: &segments.RetryCounts{}, started: time.Now()}
	d.log = slog.New(&recentHandler{next: newLogger(cfg).Handler(), log: d.recent})
	d.mountpoint, _ = filepath.Abs(cfg.Mountpoint)
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := d.listenMetrics(); err != nil {
		return err
	}
	if d.metricsL != nil {
		defer d.metricsL.Close()
	}
	if err := d.connect(ctx); err != nil {
		return err
	}
	if err := d.buildWritePath(); err != nil {
		return err
	}
	if err := d.buildPeers(ctx); err != nil {
		return err
	}
	if err := d.buildReadPath(); err != nil {
		return err
	}
	defer d.blocks.Close()

	// The mount's lifetime outlasts the signal: serve ends it once the
	// mount has stopped.
	life, cancelLife := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelLife()
	d.buildFS(life)
	if err := d.mount(); err != nil {
		return err
	}
	d.serve(ctx, life, cancelLife)
	return nil
}

// daemon is what runMount builds, step by step, and then serves.
type daemon struct {
	cfg        *Config
	log        *slog.Logger
	recent     *recentLog // the last warnings and errors, for status
	started    time.Time
	mountpoint string // absolute

	// listenMetrics (nil without --metrics-addr)
	metrics  *metrics
	metricsL net.Listener
	retries  *segments.RetryCounts

	// connect
	keeper *auth.Keeper
	store  *segments.Retrying // retried for --retry-budget
	retry  segments.RetryPolicy
	limits segments.Limits

	// buildWritePath
	pool    *segments.Pool
	staging *segments.Staging // nil without --staging-dir

	// buildPeers (nil without --peers)
	peering *peering

	// buildReadPath
	blocks *cache.Blocks

	// buildFS
	versions *segments.Versions // nil in account mode
	account  *segments.Account  // account mode only
	root     mountRoot

	// mount
	server *fuse.Server
}

// checkArgs checks the arguments, the mountpoint and the settings (every
// problem of the settings at once), before anything is contacted.
func checkArgs(cfg *Config) error {
	if cfg.Container == "" && !cfg.Account {
		return &usageError{msg: "no container given: the first argument is CONTAINER[/PREFIX]"}
	}
	if err := checkMountpoint(cfg.Mountpoint); err != nil {
		return err
	}
	return errors.Join(cfg.resolveAuth(), cfg.Validate())
}

// connect gets the first token, builds the store, checks the container
// and reads Swift's limits: wrong credentials, a wrong container or a
// cluster without SLO fail here.
func (d *daemon) connect(ctx context.Context) error {
	var wrap func(http.RoundTripper) http.RoundTripper
	if d.metrics != nil {
		wrap = d.metrics.transport
	}
	keeper, raw, err := login(ctx, d.cfg, d.log, wrap)
	if err != nil {
		return err
	}
	d.keeper = keeper
	d.retry = segments.DefaultRetryPolicy
	d.retry.Budget = d.cfg.RetryBudget
	d.retry.Counts = d.retries
	d.store = &segments.Retrying{ObjectStore: raw, P: d.retry, Log: d.log}

	check := func() error { return checkContainer(ctx, raw, keeper, d.cfg.Container, d.cfg.CreateContainer) }
	if d.cfg.Account {
		check = func() error { return checkAccount(ctx, raw, keeper) }
	}
	if err := check(); err != nil {
		return err
	}
	limits, err := checkStore(raw).Limits(ctx)
	if err != nil {
		d.log.Warn("could not read Swift's /info; assuming default limits", "err", err)
		limits = segments.DefaultLimits
	}
	if len(limits.Problems) > 0 {
		d.log.Warn("Swift's /info gives limits that make no sense; using Swift's defaults for them", "problems", limits.Problems)
	}
	if !limits.SLO {
		return fmt.Errorf("the Swift cluster at %s has no slo middleware: imagefs stores large images as static large objects", keeper.Current().StorageURL)
	}
	d.limits = limits
	return nil
}

// buildWritePath makes the segment pool (the memory of all writes) and
// the staging directory, for segments the cluster accepts.
func (d *daemon) buildWritePath() error {
	w := &d.cfg.Write
	if w.SegmentSize.Bytes() > d.limits.MaxFileSize {
		return fmt.Errorf("--segment-size %s is larger than the cluster's max_file_size (%d bytes)", w.SegmentSize, d.limits.MaxFileSize)
	}
	d.pool = segments.NewPool(w.SegmentSize.Bytes(), w.UploadWorkers)
	if w.StagingDir != "" {
		var err error
		if d.staging, err = segments.NewStaging(w.StagingDir, w.StagingSize.Bytes()); err != nil {
			return fmt.Errorf("--staging-dir: %v", err)
		}
	}
	return nil
}

// buildReadPath makes the block cache and bounds the process's memory
// (the read memory and the write path's budget).
func (d *daemon) buildReadPath() error {
	r := &d.cfg.Read
	o := cache.Options{Memory: r.Memory.Bytes(), Dir: r.CacheDir, DirSize: r.CacheSize.Bytes(), Log: d.log}
	var peerMem int64
	if d.peering != nil {
		o.Peers, peerMem = d.peering.peers, d.cfg.Peer.Cache.Bytes()
	}
	blocks, err := cache.New(o)
	if err != nil {
		return err
	}
	d.blocks = blocks
	// Block and segment buffers come and go at the speed of the data:
	// with Go's default GOGC=100 the heap grows to twice the live data
	// before a collection, and the RSS to twice the budgets. The buffers
	// are pointer-free, so collecting more often costs little CPU.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(20)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(r.Memory.Bytes() + peerMem + d.pool.MemoryBudget() + 64<<20)
	}
	return nil
}

// buildFS builds the filesystem over the write and read paths: the
// owner of the mount's versions, the container's objects, the root.
func (d *daemon) buildFS(life context.Context) {
	if d.cfg.Account {
		d.buildAccountFS(life)
		return
	}
	cfg := d.cfg
	prefix := scopePrefix(cfg.Prefix)
	o := d.containerOptions(cfg.Container, prefix)
	root := fs.NewRoot(life, d.fsOptions(segments.NewContainer(o)))
	d.versions, d.root = o.Versions, root
}

// containerOptions are the options of container's objects (below prefix),
// with the versions this mount owns there.
func (d *daemon) containerOptions(container, prefix string) segments.ContainerOptions {
	cfg := d.cfg
	return segments.ContainerOptions{
		Store:        d.store,
		Name:         container,
		Prefix:       prefix,
		Pool:         d.pool,
		Staging:      d.staging,
		Limits:       d.limits,
		Retry:        d.retry,
		Sums:         segments.Sums{NoSHA256: !cfg.Write.SHA256, MD5: cfg.Write.MD5, SHA512: cfg.Write.SHA512},
		StallTimeout: cfg.Read.StallTimeout,
		Versions:     newVersions(d.store, container, prefix, cfg.Mountpoint, cfg.Versions, d.log),
		Log:          d.log,
	}
}

// fsOptions are the filesystem's options over objects.
func (d *daemon) fsOptions(objects *segments.Container) fs.Options {
	cfg := d.cfg
	fileMode, dirMode := cfg.Files.modes()
	return fs.Options{
		Objects:     objects,
		Log:         d.log,
		AttrTTL:     cfg.AttrTTL,
		ListTTL:     cfg.ListTTL,
		UID:         uint32(cfg.UID),
		GID:         uint32(cfg.GID),
		FileMode:    fileMode,
		DirMode:     dirMode,
		Blocks:      d.blocks,
		ReadAhead:   cache.StreamOptions{Max: cfg.Read.ReadAhead.Bytes()},
		UsageTTL:    cfg.StatfsTTL,
		ReadOnly:    cfg.ReadOnly,
		Passthrough: cfg.Read.passthrough(),

		BootTraces:  cfg.Read.BootTraces,
		TraceWindow: cfg.Read.TraceWindow,
	}
}

// mount mounts the filesystem on the mountpoint and raises the kernel's
// readahead for it.
func (d *daemon) mount() error {
	cfg := d.cfg
	fsName := "imagefs:" + cfg.Container
	if cfg.Prefix != "" {
		fsName += "/" + cfg.Prefix
	}
	if cfg.Account {
		fsName = "imagefs:" + accountName(d.keeper.Current().StorageURL)
	}
	opts := d.root.MountOptions(fsName, cfg.DebugFUSE)
	opts.AllowOther = cfg.AllowOther
	// As root, mount(2) directly: no fusermount needed.
	opts.DirectMount = os.Geteuid() == 0
	var lat fuse.LatencyMap
	if d.metrics != nil {
		lat = d.metrics
	}
	server, err := d.root.Mount(cfg.Mountpoint, opts, lat)
	if err != nil {
		return fmt.Errorf("mount %s: %v", cfg.Mountpoint, err)
	}
	d.server = server
	if kernelRA := cfg.Read.KernelReadAhead.Bytes(); kernelRA > 0 {
		if err := fs.SetKernelReadahead(cfg.Mountpoint, kernelRA); err != nil {
			d.log.Warn("could not raise the kernel's readahead for the mount; sequential buffered reads will be slower", "err", err)
		}
	}
	d.logMounted()
	return nil
}

// logMounted logs the mount and its settings, as parsed.
func (d *daemon) logMounted() {
	cfg, w, r := d.cfg, &d.cfg.Write, &d.cfg.Read
	fileMode, dirMode := cfg.Files.modes()
	d.log.Info("mounted", "version", version(), "container", cfg.Container, "prefix", cfg.Prefix, "mountpoint", cfg.Mountpoint,
		"auth", d.keeper.Mode(), "account", d.keeper.Current().StorageURL,
		"segment_size", w.SegmentSize.Bytes(), "upload_workers", w.UploadWorkers, "write_memory_budget", d.pool.MemoryBudget(),
		"staging_dir", w.StagingDir, "staging_size", w.StagingSize.String(), "sha256", w.SHA256, "md5", w.MD5, "sha512", w.SHA512,
		"max_manifest_segments", d.limits.MaxManifestSegments, "file_mode", fmt.Sprintf("%04o", fileMode), "dir_mode", fmt.Sprintf("%04o", dirMode),
		"allow_other", cfg.AllowOther, "read_only", cfg.ReadOnly, "uid", cfg.UID, "gid", cfg.GID, "version_grace", cfg.Versions.Grace, "lease_ttl", cfg.Versions.LeaseTTL,
		"reap_interval", cfg.Versions.ReapInterval, "host", d.host(), "account_mode", cfg.Account,
		"read_memory", r.Memory.Bytes(), "read_ahead", r.ReadAhead.Bytes(), "kernel_read_ahead", r.KernelReadAhead.Bytes(),
		"cache_dir", r.CacheDir, "cache_size", r.CacheSize.Bytes(), "passthrough", r.passthrough(), "boot_traces", r.BootTraces, "boot_trace_window", r.TraceWindow)
}

// serve runs the token keeper and the versions' upkeep for the mount's
// life, until an unmount from outside or a signal (then it stops the
// mount as shutdown.go says), and then gives up this host's lease.
func (d *daemon) serve(ctx, life context.Context, cancelLife context.CancelFunc) {
	cfg, log := d.cfg, d.log
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.keeper.Run(life) })
	wg.Go(func() { _ = d.upkeep().Run(life) })
	d.serveMonitoring(life, &wg)
	secrets := newSecretWatcher(cfg, d.keeper, log) // catches SIGHUP from here on
	wg.Go(func() { secrets.Run(life) })
	sdNotify(log, "READY=1")
	tellHelper(readyMsg)

	dev := mountDevice(cfg.Mountpoint)
	unmounted := make(chan struct{})
	go func() { d.server.Wait(); close(unmounted) }()
	select {
	case <-unmounted:
		log.Info("unmounted from outside")
	case <-ctx.Done():
		log.Info("signal received; unmounting")
		sdNotify(log, "STOPPING=1")
		shutdown(log, d.root, cfg, dev, unmounted)
	}
	cancelLife()
	wg.Wait()
	// Nothing is served any more: this host holds no version now.
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := d.upkeep().Close(cctx); err != nil {
		log.Warn("could not remove this host's lease; it expires by itself", "lease_ttl", cfg.Versions.LeaseTTL, "err", err)
	}
	cancel()
	log.Info("read cache", "stats", d.blocks.Stats())
	if d.peering != nil {
		log.Info("peer fill", "stats", d.peering.peers.Stats())
		d.peering.peers.Close()
	}
}

// listenMetrics opens the metrics endpoint's port before anything else,
// so that a port in use fails the mount at once.
func (d *daemon) listenMetrics() error {
	addr := d.cfg.Metrics.Addr
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-addr %s: cannot listen there: %v", addr, err)
	}
	d.metrics, d.metricsL = newMetrics(), l
	return nil
}

// serveMonitoring serves the metrics endpoint and the control socket for
// the mount's life.
func (d *daemon) serveMonitoring(life context.Context, wg *sync.WaitGroup) {
	if d.metrics != nil {
		d.metrics.reg.MustRegister(&collector{s: sources{root: d.root, pool: d.pool, staging: d.staging, blocks: d.blocks,
			keeper: d.keeper, retries: d.retries, read: d.cfg.Read}})
		d.log.Info("serving metrics", "url", "http://"+d.metricsL.Addr().String()+"/metrics")
		wg.Go(func() { serveMetrics(life, d.metricsL, d.metrics.reg, d.log) })
	}
	d.servePeers(life, wg)
	l, path, err := listenControl(d.cfg.RunDir, d.mountpoint)
	if err != nil {
		d.log.Warn("no control socket: imagefs status cannot reach this mount", "run_dir", d.cfg.RunDir, "err", err)
		return
	}
	wg.Go(func() { d.serveControl(life, l, path) })
}

// scopePrefix is the mounted prefix as the objects' names start with it:
// "" or ending in "/".
func scopePrefix(prefix string) string {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix
}

// login gets the first token (failing fast on bad credentials) and
// returns the keeper and the Swift store that uses it, without retries.
// wrap, if not nil, wraps the HTTP transport below the keeper's (metrics).
func login(ctx context.Context, cfg *Config, log *slog.Logger, wrap func(http.RoundTripper) http.RoundTripper) (*auth.Keeper, *segments.SwiftStore, error) {
	keeper, err := auth.New(ctx, cfg.Auth, log)
	if err != nil {
		return nil, nil, err
	}
	t := segments.DefaultTransport()
	if cfg.Auth.TLS != nil {
		t.TLSClientConfig = cfg.Auth.TLS.Clone()
		if cfg.Auth.TLS.InsecureSkipVerify {
			log.Warn("TLS certificates of Keystone and Swift are not verified (--insecure, OS_INSECURE or verify: false): anyone on the path can read the tokens")
		}
	}
	var base http.RoundTripper = t
	if wrap != nil {
		base = wrap(t)
	}
	raw := segments.NewSwiftStore(segments.SwiftOptions{
		Auth:      keeper.Authenticator(),
		Transport: keeper.Transport(base),
	})
	return keeper, raw, nil
}

// checkStore retries with a short budget, for the checks before any work:
// a wrong container should not take minutes to report.
// Its retries are not logged: the operator gets one line, the last error.
func checkStore(raw segments.ObjectStore) *segments.Retrying {
	return &segments.Retrying{ObjectStore: raw, P: segments.RetryPolicy{Base: 200 * time.Millisecond, Cap: 2 * time.Second, Budget: checkBudget}}
}

// checkBudget is how long the checks before mounting retry.
const checkBudget = 10 * time.Second

// checkContainer explains to an operator why a container cannot be used,
// and with --create-container creates a missing one. raw is the store
// without retries.
func checkContainer(ctx context.Context, raw segments.ObjectStore, keeper *auth.Keeper, container string, create bool) error {
	// One attempt first: Keystone has just issued the token, so a 401 now
	// is Swift refusing the credentials, not an outage: not worth retries.
	_, err := raw.HeadContainer(ctx, container)
	if err != nil && !errors.Is(err, segments.ErrAuth) && !errors.Is(err, segments.ErrNotFound) {
		_, err = checkStore(raw).HeadContainer(ctx, container)
	}
	if errors.Is(err, segments.ErrNotFound) && create {
		err = createContainer(ctx, raw, container)
		if errors.Is(err, segments.ErrAuth) {
			return fmt.Errorf("container %q does not exist and Swift refused to create it (--create-container): the user needs an operator role (member) on the project: %v", container, err)
		}
		if err != nil {
			return fmt.Errorf("container %q does not exist and could not be created (--create-container): %v", container, err)
		}
		return nil
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, segments.ErrNotFound):
		return fmt.Errorf("container %q does not exist in %s: create it first (swift post %s, or imagefs mount --create-container) or check the name",
			container, keeper.Current().StorageURL, container)
	case errors.Is(err, segments.ErrAuth) && keeper.Mode() == auth.ModeServiceToken:
		return fmt.Errorf("Swift refused the service token for container %q at %s: the service user needs the role Swift's keystonemiddleware requires (service_token_roles, usually 'service'), and Swift must list the account's reseller prefix with its <PREFIX>_service_roles: %v",
			container, keeper.Current().StorageURL, err)
	case errors.Is(err, segments.ErrAuth):
		return fmt.Errorf("Swift refused access to container %q: the user needs an operator role (member) on the project: %v", container, err)
	}
	if hint := auth.TLSProblem(err); hint != "" {
		return fmt.Errorf("cannot reach container %q at %s: %v: %s", container, keeper.Current().StorageURL, err, hint)
	}
	return fmt.Errorf("cannot reach container %q at %s (tried for %v): %v", container, keeper.Current().StorageURL, checkBudget, err)
}

// createContainer creates a container and its segment container (which
// the first large file would create anyway).
func createContainer(ctx context.Context, raw segments.ObjectStore, container string) error {
	for _, c := range []string{container, container + "_segments"} {
		if err := checkStore(raw).CreateContainer(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// checkMountpoint makes sure the mountpoint is an existing directory.
func checkMountpoint(dir string) error {
	if dir == "" {
		return &usageError{msg: "no mountpoint given"}
	}
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mountpoint %s does not exist: create it first (mkdir -p %s)", dir, dir)
	}
	if errors.Is(err, syscall.ENOTCONN) {
		return deadMount(dir)
	}
	if err != nil {
		return fmt.Errorf("mountpoint %s: %v", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", dir)
	}
	abs, _ := filepath.Abs(dir)
	if mounted, _ := isMountpoint(abs); mounted {
		if statfsErr(abs, 2*time.Second) == syscall.ENOTCONN {
			return deadMount(dir)
		}
		return fmt.Errorf("mountpoint %s already has a filesystem mounted on it: unmount it first (umount %s)", dir, dir)
	}
	return nil
}

// deadMount is the error for a FUSE mount whose daemon died (a crash,
// kill -9, the OOM killer): the kernel keeps the mount until it is
// unmounted. os.Stat may still succeed on it while the kernel's cached
// attributes of its root last; statfs(2) always asks the daemon.
func deadMount(dir string) error {
	return fmt.Errorf("mountpoint %s is a dead FUSE mount left by a daemon that exited without unmounting: "+
		"unmount it first (umount -l %s); programs that had files open there must reopen them", dir, dir)
}

// statfsErr is statfs(2)'s error on dir, or nil if it has not answered
// within d (a live but hung filesystem).
func statfsErr(dir string, d time.Duration) error {
	ch := make(chan error, 1)
	go func() {
		var st syscall.Statfs_t
		ch <- syscall.Statfs(dir, &st)
	}()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		return nil
	}
}

// isMountpoint reports whether dir is listed in /proc/self/mountinfo.
func isMountpoint(dir string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range splitLines(string(b)) {
		f := fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == dir {
			return true, nil
		}
	}
	return false, nil
}

// sdNotify tells systemd (Type=notify) about the daemon's state. Without
// NOTIFY_SOCKET it does nothing.
func sdNotify(log *slog.Logger, state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		log.Warn("sd_notify failed", "err", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
}

// startCPUProfile writes a CPU profile of the daemon to p (pprof format)
// until the returned function is called.
func startCPUProfile(p string) (func(), error) {
	f, err := os.Create(p)
	if err != nil {
		return nil, fmt.Errorf("IMAGEFS_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("IMAGEFS_CPUPROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

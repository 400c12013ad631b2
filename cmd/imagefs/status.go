package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

// imagefs status: what a mount is doing, for a person at a terminal.
//
// Each daemon serves a control socket, <run-dir>/<mountpoint, escaped as
// systemd-escape --path does>.sock (root only: the directory is 0700, the
// socket 0600), with one JSON report at GET /status. The status command
// finds a mount's socket from its mountpoint alone, and without a
// mountpoint asks every socket in the directory. A socket rather than the
// metrics endpoint: it works without --metrics-addr, it is found from the
// mountpoint, the filesystem decides who may read it (no port for other
// local users), and it carries what metrics should not (paths of the
// files being written, the last errors).

const defaultRunDir = "/run/imagefs"

// statusReport is what the control socket answers.
type statusReport struct {
	Mountpoint string    `json:"mountpoint"`
	Container  string    `json:"container"`
	Prefix     string    `json:"prefix,omitempty"`
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	Started    time.Time `json:"started"`

	Auth struct {
		Mode       string  `json:"mode"`
		ExpiresIn  float64 `json:"token_expires_in_seconds"`
		DeadlineIn float64 `json:"deadline_in_seconds,omitempty"` // app credential expiry, allow-expired window
		Renewals   int64   `json:"renewals"`
		Failures   int64   `json:"renewal_failures"`
		Rejections int64   `json:"swift_401"`
		LastError  string  `json:"last_error,omitempty"`
	} `json:"auth"`

	Uploads []uploadStatus `json:"uploads"`

	Write struct {
		MemoryInUse   int64 `json:"memory_bytes"`
		MemoryBudget  int64 `json:"memory_budget_bytes"`
		Busy          int   `json:"upload_workers_busy"`
		Workers       int   `json:"upload_workers"`
		StagingUsed   int64 `json:"staging_bytes"`
		StagingBudget int64 `json:"staging_budget_bytes"`
	} `json:"write"`

	Cache struct {
		MemBytes  int64 `json:"memory_bytes"`
		MemLimit  int64 `json:"memory_limit_bytes"`
		DiskBytes int64 `json:"disk_bytes"`
		DiskLimit int64 `json:"disk_limit_bytes"`
		MemHits   int64 `json:"memory_hits"`
		DiskHits  int64 `json:"disk_hits"`
		Misses    int64 `json:"misses"`
	} `json:"cache"`

	Commits        int64 `json:"commits"`
	CommitFailures int64 `json:"commit_failures"`

	Recent []logEntry `json:"recent_errors"`
}

type uploadStatus struct {
	Path     string    `json:"path"`
	State    string    `json:"state"`
	Written  int64     `json:"written_bytes"`
	Uploaded int64     `json:"uploaded_bytes"`
	InFlight int64     `json:"segments_in_flight"`
	Queued   int64     `json:"segments_queued"`
	Done     int64     `json:"segments_done"`
	Started  time.Time `json:"started"`
	Rate     float64   `json:"upload_bytes_per_second"`
}

// report builds the status report from the same snapshots as the metrics.
func (d *daemon) report() statusReport {
	var r statusReport
	cfg := d.cfg
	r.Mountpoint, r.Container, r.Prefix, r.PID, r.Version, r.Started = d.mountpoint, cfg.Container, cfg.Prefix, os.Getpid(), version(), d.started

	ks := d.keeper.Stats()
	r.Auth.Mode, r.Auth.ExpiresIn, r.Auth.DeadlineIn = string(ks.Mode), ks.ExpiresIn.Seconds(), ks.DeadlineIn.Seconds()
	r.Auth.Renewals, r.Auth.Failures, r.Auth.Rejections = ks.Renewals, ks.Failures, ks.Rejections
	if ks.LastError != nil {
		r.Auth.LastError = ks.LastError.Error()
	}
	for _, u := range d.root.UploadList() {
		us := uploadStatus{Path: u.Path, State: u.State, Written: u.Written, Uploaded: u.Uploaded,
			InFlight: u.InFlight, Queued: u.Queued, Done: u.Done, Started: u.Started}
		if el := time.Since(u.Started).Seconds(); el > 0 {
			us.Rate = float64(u.Uploaded) / el
		}
		r.Uploads = append(r.Uploads, us)
	}
	ps := d.pool.Stats()
	r.Write.MemoryInUse, r.Write.MemoryBudget, r.Write.Busy, r.Write.Workers = ps.MemoryInUse, ps.MemoryBudget, ps.Uploads, ps.Workers
	if d.staging != nil {
		r.Write.StagingUsed, r.Write.StagingBudget = d.staging.Used(), d.staging.Budget()
	}
	cs := d.blocks.Stats()
	r.Cache.MemBytes, r.Cache.MemLimit, r.Cache.DiskBytes = cs.MemBytes, cfg.Read.Memory.Bytes(), cs.DiskBytes
	if cfg.Read.CacheDir != "" {
		r.Cache.DiskLimit = cfg.Read.CacheSize.Bytes()
	}
	r.Cache.MemHits, r.Cache.DiskHits, r.Cache.Misses = cs.MemHits, cs.DiskHits, cs.FetchedBlocks
	fst := d.root.Stats()
	r.Commits, r.CommitFailures = fst.Commits, fst.CommitFailures
	r.Recent = d.recent.entries()
	return r
}

// socketPath is the control socket of the mount at mountpoint (absolute).
func socketPath(runDir, mountpoint string) string {
	p := filepath.Join(runDir, escapePath(mountpoint)+".sock")
	if len(p) >= 100 { // sun_path is 108 bytes
		sum := sha256.Sum256([]byte(mountpoint))
		p = filepath.Join(runDir, "mount-"+hex.EncodeToString(sum[:12])+".sock")
	}
	return p
}

// escapePath escapes an absolute path as systemd-escape --path does:
// /var/lib/images is var-lib-images, / is "-".
func escapePath(p string) string {
	p = strings.Trim(filepath.Clean(p), "/")
	if p == "" {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == ':', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

// listenControl creates the control socket (root only), replacing one a
// dead daemon left.
func listenControl(runDir, mountpoint string) (net.Listener, string, error) {
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, "", err
	}
	if err := os.Chmod(runDir, 0o700); err != nil {
		return nil, "", err
	}
	p := socketPath(runDir, mountpoint)
	if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
		c.Close()
		return nil, "", fmt.Errorf("%s is served by another imagefs daemon", p)
	}
	_ = os.Remove(p)
	l, err := net.Listen("unix", p)
	if err != nil {
		return nil, "", err
	}
	if err := os.Chmod(p, 0o600); err != nil {
		l.Close()
		return nil, "", err
	}
	return l, p, nil
}

// serveControl answers the status command on l until ctx ends, then
// removes the socket.
func (d *daemon) serveControl(ctx context.Context, l net.Listener, path string) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(d.report())
	})
	mux.HandleFunc("POST /warm", d.handleWarm) // warm.go
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Warn("the control socket stopped; imagefs status cannot reach this mount", "socket", path, "err", err)
	}
	_ = os.Remove(path)
}

// recentLog keeps the last warnings and errors the daemon logged, for
// status. Values are resolved as the log handlers do (auth.Secret shows
// as REDACTED), so it holds nothing a log line would not.
type recentLog struct {
	mu   sync.Mutex
	list []logEntry // oldest first, at most recentMax
}

const recentMax = 10

type logEntry struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
}

func (l *recentLog) add(e logEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.list) == recentMax {
		l.list = append(l.list[:0], l.list[1:]...)
	}
	l.list = append(l.list, e)
}

func (l *recentLog) entries() []logEntry {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]logEntry(nil), l.list...)
}

// recentHandler passes records on to the daemon's handler and keeps the
// warnings and errors in a recentLog, whatever the log level.
type recentHandler struct {
	next  slog.Handler
	log   *recentLog
	attrs string // of WithAttrs, formatted
}

func (h *recentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *recentHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(r.Message)
		b.WriteString(h.attrs)
		r.Attrs(func(a slog.Attr) bool { writeAttr(&b, "", a); return true })
		msg := b.String()
		if len(msg) > 1000 {
			msg = msg[:1000] + "..."
		}
		h.log.add(logEntry{Time: r.Time, Level: r.Level.String(), Msg: msg})
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func writeAttr(b *strings.Builder, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			writeAttr(b, prefix+a.Key+".", g)
		}
		return
	}
	fmt.Fprintf(b, " %s%s=%s", prefix, a.Key, v.String())
}

func (h *recentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		writeAttr(&b, "", a)
	}
	return &recentHandler{next: h.next.WithAttrs(as), log: h.log, attrs: b.String()}
}

func (h *recentHandler) WithGroup(name string) slog.Handler {
	return &recentHandler{next: h.next.WithGroup(name), log: h.log, attrs: h.attrs}
}

// The status command.

func statusCommand() *cli.Command {
	var runDir string
	var asJSON bool
	return &cli.Command{
		Name:      "status",
		Usage:     "show what a mount is doing: auth, uploads in progress, cache, recent errors",
		ArgsUsage: "[MOUNTPOINT]",
		Description: "Asks the daemon of MOUNTPOINT through its control socket in --run-dir (root only).\n" +
			"Without MOUNTPOINT it shows every imagefs mount of this host.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "run-dir", EnvVars: []string{"IMAGEFS_RUN_DIR"}, Value: defaultRunDir, Destination: &runDir,
				Usage: "directory of the mounts' control sockets (as given to imagefs mount)"},
			&cli.BoolFlag{Name: "json", Destination: &asJSON, Usage: "print the daemon's report as JSON"},
		},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return &usageError{msg: err.Error(), cmd: "status"}
		},
		Action: func(c *cli.Context) error {
			switch c.NArg() {
			case 0:
				return statusAll(c.Context, os.Stdout, runDir, asJSON)
			case 1:
				r, err := statusOf(c.Context, runDir, c.Args().Get(0))
				if err != nil {
					return err
				}
				printStatus(os.Stdout, r, asJSON)
				return nil
			}
			return &usageError{msg: fmt.Sprintf("status takes at most one MOUNTPOINT, got %d arguments", c.NArg()), cmd: "status"}
		},
	}
}

// statusOf asks the daemon of the mount at dir, with an error that says
// what is wrong: not an imagefs mount, daemon not running, permission.
func statusOf(ctx context.Context, runDir, dir string) (statusReport, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return statusReport{}, err
	}
	if _, err := os.Lstat(abs); errors.Is(err, os.ErrNotExist) {
		return statusReport{}, fmt.Errorf("%s does not exist", dir)
	}
	fstype, mounted := mountType(abs)
	switch {
	case !mounted:
		return statusReport{}, fmt.Errorf("%s is not an imagefs mount: nothing is mounted there", dir)
	case fstype != "fuse.imagefs":
		return statusReport{}, fmt.Errorf("%s is not an imagefs mount: it is a %s filesystem", dir, fstype)
	}
	sock := socketPath(runDir, abs)
	r, err := askSocket(ctx, sock)
	switch {
	case err == nil:
		return r, nil
	case errors.Is(err, os.ErrPermission):
		return r, fmt.Errorf("permission denied on the control socket %s of %s: run imagefs status as root (or as the daemon's user)", sock, dir)
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		if statfsErr(abs, 2*time.Second) == syscall.ENOTCONN {
			return r, fmt.Errorf("the imagefs daemon of %s is not running: the mount is dead (unmount it: umount -l %s)", dir, dir)
		}
		return r, fmt.Errorf("the imagefs daemon of %s does not answer on %s: it is not running, or it was started with another --run-dir (give the same --run-dir or IMAGEFS_RUN_DIR)", dir, sock)
	}
	return r, fmt.Errorf("ask the imagefs daemon of %s (%s): %v", dir, sock, err)
}

// statusAll shows every mount whose socket is in runDir.
func statusAll(ctx context.Context, w io.Writer, runDir string, asJSON bool) error {
	socks, err := filepath.Glob(filepath.Join(runDir, "*.sock"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(runDir); errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("permission denied on %s: run imagefs status as root", runDir)
	}
	sort.Strings(socks)
	var reports []statusReport
	var problems []string
	for _, s := range socks {
		r, err := askSocket(ctx, s)
		switch {
		case err == nil:
			reports = append(reports, r)
		case errors.Is(err, os.ErrPermission):
			return fmt.Errorf("permission denied on the control socket %s: run imagefs status as root", s)
		default:
			problems = append(problems, fmt.Sprintf("%s: no daemon answers, a daemon that died left it (%v)", s, err))
		}
	}
	if asJSON {
		return json.NewEncoder(w).Encode(reports)
	}
	if len(reports) == 0 && len(problems) == 0 {
		fmt.Fprintf(w, "no imagefs mounts on this host (no control sockets in %s)\n", runDir)
	}
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		printStatus(w, r, false)
	}
	for _, p := range problems {
		fmt.Fprintln(w, p)
	}
	return nil
}

// askSocket gets the report of the daemon at the socket.
func askSocket(ctx context.Context, sock string) (statusReport, error) {
	var r statusReport
	if _, err := os.Stat(sock); err != nil {
		return r, err
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://imagefs/status", nil)
	if err != nil {
		return r, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("the daemon answered %s", resp.Status)
	}
	return r, json.NewDecoder(resp.Body).Decode(&r)
}

// mountType is the filesystem type of the mount at dir, from mountinfo.
func mountType(dir string) (string, bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	fstype, found := "", false
	for _, line := range splitLines(string(b)) {
		f := fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == dir {
			for i, x := range f {
				if x == "-" && i+1 < len(f) {
					fstype, found = f[i+1], true // the last mount on dir is the one seen
				}
			}
		}
	}
	return fstype, found
}

func printStatus(w io.Writer, r statusReport, asJSON bool) {
	if asJSON {
		_ = json.NewEncoder(w).Encode(r)
		return
	}
	src := r.Container
	if r.Prefix != "" {
		src += "/" + r.Prefix
	}
	fmt.Fprintf(w, "%s: container %s, pid %d, up %s, version %s\n", r.Mountpoint, src, r.PID,
		time.Since(r.Started).Round(time.Second), r.Version)
	a := r.Auth
	fmt.Fprintf(w, "auth: %s, token expires in %s, %d renewals, %d failed, %d Swift 401s\n",
		a.Mode, secs(a.ExpiresIn), a.Renewals, a.Failures, a.Rejections)
	if a.DeadlineIn != 0 {
		what := "application credential expires"
		if a.Mode == "service-token" {
			what = "user token's allow-expired window ends"
		}
		fmt.Fprintf(w, "      %s in %s\n", what, secs(a.DeadlineIn))
	}
	if a.LastError != "" {
		fmt.Fprintf(w, "      last renewal failed: %s\n", a.LastError)
	}
	fmt.Fprintf(w, "write memory: %s of %s; upload workers busy: %d of %d", size(r.Write.MemoryInUse), size(r.Write.MemoryBudget), r.Write.Busy, r.Write.Workers)
	if r.Write.StagingBudget > 0 {
		fmt.Fprintf(w, "; staging: %s of %s", size(r.Write.StagingUsed), size(r.Write.StagingBudget))
	}
	fmt.Fprintln(w)
	c := r.Cache
	fmt.Fprintf(w, "read cache: memory %s of %s, disk %s of %s; hits %d memory, %d disk; misses %d\n",
		size(c.MemBytes), size(c.MemLimit), size(c.DiskBytes), size(c.DiskLimit), c.MemHits, c.DiskHits, c.Misses)
	fmt.Fprintf(w, "commits: %d ok, %d failed\n", r.Commits, r.CommitFailures)
	if len(r.Uploads) == 0 {
		fmt.Fprintln(w, "uploads in progress: none")
	} else {
		fmt.Fprintf(w, "uploads in progress: %d\n", len(r.Uploads))
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  PATH\tSTATE\tWRITTEN\tUPLOADED\tSEGMENTS (in flight/queued/done)\tRATE")
		for _, u := range r.Uploads {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d/%d/%d\t%s/s\n", u.Path, u.State, size(u.Written), size(u.Uploaded),
				u.InFlight, u.Queued, u.Done, size(int64(u.Rate)))
		}
		tw.Flush()
	}
	if len(r.Recent) > 0 {
		fmt.Fprintln(w, "recent warnings and errors:")
		for _, e := range r.Recent {
			fmt.Fprintf(w, "  %s %s %s\n", e.Time.Local().Format("15:04:05"), e.Level, e.Msg)
		}
	}
}

func secs(s float64) string { return (time.Duration(s) * time.Second).String() }

// size formats bytes for people: 1.5GiB.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, suffix := float64(n)/unit, "KMGTPE"
	i := 0
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f%ciB", v, suffix[i])
}

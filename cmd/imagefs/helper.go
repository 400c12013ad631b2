package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// The mount helper. For `mount -t fuse.imagefs SPEC DIR -o OPTIONS` and
// fstab lines of type fuse.imagefs, util-linux runs
//
//	/sbin/mount.fuse.imagefs SPEC DIR [-sfnv] [-N NS] [-o OPTIONS] [-t fuse.imagefs]
//
// which is a symlink to this binary: called by that name, it is
// `imagefs mount-helper`. The helper turns the options into flags of
// `imagefs mount` (an option is a flag's name, "_" or "-": segment_size=64MiB,
// allow_other, ro for --read-only), reads the settings and credentials from
// env=FILE (the env file of the systemd unit), starts `imagefs mount` in its
// own session with its log in a file, and returns once the mount is ready,
// or fails with the daemon's own error. umount then stops the daemon: it
// exits when its mount goes away.

// helperName is the name util-linux runs the helper by.
const helperName = "mount.fuse.imagefs"

// helperTimeout bounds the wait for the daemon to mount.
const helperTimeout = 3 * time.Minute

// defaultLogDir holds the daemons' logs, one file per mountpoint.
const defaultLogDir = "/var/log/imagefs"

// ignoredOptions are the generic mount options that mean nothing to imagefs
// (or that it always applies: nosuid, nodev, default_permissions).
var ignoredOptions = map[string]bool{
	"defaults": true, "rw": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"nosuid": true, "nodev": true, "noatime": true, "relatime": true, "nodiratime": true,
	"default_permissions": true,
}

func helperCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount-helper",
		Usage:     "mount from fstab or mount(8): what util-linux runs as /sbin/" + helperName,
		ArgsUsage: "CONTAINER[/PREFIX] MOUNTPOINT [-o OPTIONS] [-s] [-f] [-n] [-v]",
		Description: "Install it with: ln -s /usr/local/bin/imagefs /sbin/" + helperName + "\n" +
			"Then: mount -t fuse.imagefs images /var/lib/images -o env=/etc/imagefs/images.env,allow_other\n" +
			"or the fstab line: images /var/lib/images fuse.imagefs _netdev,allow_other,env=/etc/imagefs/images.env 0 0\n" +
			"OPTIONS are flags of 'imagefs mount' by name (segment_size=64MiB, allow_other, uid=107), ro (--read-only),\n" +
			"env=FILE (settings and credentials, one VAR=value a line) and log=FILE; generic options (defaults, rw,\n" +
			"auto, noauto, nofail, _netdev, nosuid, nodev, noatime, relatime, x-*) are ignored. -s ignores unknown options,\n" +
			"-f checks without mounting, -v says what it runs. It returns once the mount is ready; umount stops the daemon.",
		SkipFlagParsing: true,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			for _, a := range c.Args().Slice() {
				if a == "-h" || a == "--help" {
					return cli.ShowSubcommandHelp(c)
				}
			}
			return runHelper(c.Context, c.Args().Slice())
		},
	}
}

// helperArgs is the command line util-linux gives the helper.
type helperArgs struct {
	spec, dir             string
	opts                  []string // the -o lists, split at commas
	sloppy, fake, verbose bool
}

func helperUsage(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...), cmd: "mount-helper"}
}

// parseHelperArgs reads util-linux's helper command line.
func parseHelperArgs(args []string) (helperArgs, error) {
	var h helperArgs
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "" || a[0] != '-' || a == "-" {
			pos = append(pos, a)
			continue
		}
		// -o, -t and -N take a value, in the next argument or attached.
		if c := a[1]; len(a) >= 2 && (c == 'o' || c == 't' || c == 'N') {
			v := a[2:]
			if v == "" {
				if i+1 == len(args) {
					return h, helperUsage("-%c needs a value", c)
				}
				i++
				v = args[i]
			}
			switch c {
			case 'o':
				for _, o := range strings.Split(v, ",") {
					if o != "" {
						h.opts = append(h.opts, o)
					}
				}
			case 't':
				if v != "fuse.imagefs" && v != "imagefs" {
					return h, helperUsage("-t %s: this helper mounts fuse.imagefs", v)
				}
			case 'N':
				return h, helperUsage("-N %s: mounting in another mount namespace is not supported; run mount there", v)
			}
			continue
		}
		for _, c := range a[1:] {
			switch c {
			case 's':
				h.sloppy = true
			case 'f':
				h.fake = true
			case 'v':
				h.verbose = true
			case 'n': // no /etc/mtab to write: the kernel's mount table is the only one
			default:
				return h, helperUsage("unknown flag %s: the helper takes -o OPTIONS, -s, -f, -n, -v", a)
			}
		}
	}
	if len(pos) != 2 {
		return h, helperUsage("the helper needs CONTAINER[/PREFIX] and MOUNTPOINT, got %d argument(s)", len(pos))
	}
	h.spec, h.dir = pos[0], pos[1]
	return h, nil
}

// helperPlan is what the options ask for.
type helperPlan struct {
	flags    []string // flags of imagefs mount
	envFile  string
	logFile  string
	warnings []string // options -s let through
}

// translateOptions turns -o options into flags of imagefs mount.
func translateOptions(opts []string, sloppy bool) (helperPlan, error) {
	var p helperPlan
	var cfg Config
	kinds := map[string]string{} // flag name -> "bool", "secret" or "value"
	for _, f := range mountFlags(&cfg) {
		kind := "value"
		if _, ok := f.(*cli.BoolFlag); ok {
			kind = "bool"
		}
		for _, n := range f.Names() {
			kinds[n] = kind
		}
	}
	for _, s := range cfg.secrets {
		kinds[s.name] = "secret"
	}
	var errs []error
	for _, o := range opts {
		name, val, hasVal := strings.Cut(o, "=")
		switch {
		case ignoredOptions[name] || strings.HasPrefix(name, "x-") || name == "comment":
			continue
		case name == "ro" && !hasVal:
			p.flags = append(p.flags, "--read-only")
			continue
		case name == "env" || name == "log":
			if val == "" {
				errs = append(errs, fmt.Errorf("-o %s needs a file: %s=PATH", o, name))
				continue
			}
			abs, err := filepath.Abs(val)
			if err != nil {
				errs = append(errs, fmt.Errorf("-o %s: %v", o, err))
				continue
			}
			if name == "env" {
				p.envFile = abs
			} else {
				p.logFile = abs
			}
			continue
		}
		flag := strings.ReplaceAll(name, "_", "-")
		switch kinds[flag] {
		case "secret":
			errs = append(errs, fmt.Errorf("-o %s: a secret in the mount options shows in ps and in the fstab; put it in a file (%s_file=PATH, or the _FILE variable in the env file)",
				name, name))
		case "bool":
			if hasVal {
				p.flags = append(p.flags, "--"+flag+"="+val)
			} else {
				p.flags = append(p.flags, "--"+flag)
			}
		case "value":
			if !hasVal {
				errs = append(errs, fmt.Errorf("-o %s needs a value: %s=VALUE (see imagefs mount --help, --%s)", o, name, flag))
				continue
			}
			p.flags = append(p.flags, "--"+flag+"="+val)
		default:
			if sloppy {
				p.warnings = append(p.warnings, fmt.Sprintf("ignoring the unknown option %s (-s)", o))
				continue
			}
			errs = append(errs, fmt.Errorf("unknown option %s: the options are env=FILE, log=FILE, ro, the flags of imagefs mount by name (segment_size=64MiB, allow_other) and the generic defaults, rw, auto, noauto, nofail, _netdev, x-*", o))
		}
	}
	return p, errors.Join(errs...)
}

// readEnvFile reads an env file as systemd's EnvironmentFile= does: one
// VAR=value a line, blank lines and lines starting with # or ; ignored,
// the value trimmed, one pair of quotes around it removed.
func readEnvFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("env file %s: %v", path, pathless(err))
	}
	var env []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		if !ok || !validEnvName(k) {
			// Never quote the line: it may hold a secret.
			return nil, fmt.Errorf("env file %s, line %d: not VAR=value", path, i+1)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}

func validEnvName(k string) bool {
	if k == "" || k[0] >= '0' && k[0] <= '9' {
		return false
	}
	for _, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// daemonEnv is the daemon's environment: the helper's, then the env
// file's. With an env file, the helper's OS_* and IMAGEFS_* variables are
// left out, so that a mount from a shell gets what a mount at boot gets.
func daemonEnv(file []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "NOTIFY_SOCKET" || k == readyFDEnv ||
			file != nil && (strings.HasPrefix(k, "OS_") || strings.HasPrefix(k, "IMAGEFS_")) {
			continue
		}
		env = append(env, kv)
	}
	return append(env, file...)
}

// logPath is the default log file of the daemon of mountpoint dir.
func logPath(dir string) string {
	name := strings.ReplaceAll(strings.Trim(dir, "/"), "/", "-")
	if name == "" {
		name = "-"
	}
	return filepath.Join(defaultLogDir, name+".log")
}

// helperFailure is the daemon's error, relayed by the helper with the
// daemon's exit status.
type helperFailure struct {
	msg  string
	code int
}

func (e *helperFailure) Error() string { return e.msg }

// runHelper is `imagefs mount-helper`.
func runHelper(ctx context.Context, args []string) error {
	h, err := parseHelperArgs(args)
	if err != nil {
		return err
	}
	plan, err := translateOptions(h.opts, h.sloppy)
	if err != nil {
		return err
	}
	for _, w := range plan.warnings {
		fmt.Fprintf(os.Stderr, "imagefs: %s\n", w)
	}
	var fileEnv []string
	if plan.envFile != "" {
		if fileEnv, err = readEnvFile(plan.envFile); err != nil {
			return err
		}
		if fileEnv == nil {
			fileEnv = []string{}
		}
	}
	dir, err := filepath.Abs(h.dir)
	if err != nil {
		return err
	}
	if plan.logFile == "" {
		plan.logFile = logPath(dir)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find the imagefs binary: %v", err)
	}
	argv := append(append([]string{"mount"}, plan.flags...), h.spec, dir)
	if h.verbose {
		fmt.Fprintf(os.Stderr, "imagefs: running %s %s (env file %q, log %s)\n", exe, strings.Join(argv, " "), plan.envFile, plan.logFile)
	}
	if h.fake {
		return nil
	}
	return startDaemon(ctx, exe, argv, daemonEnv(fileEnv), plan.logFile)
}

// startDaemon starts imagefs mount detached and waits until it says it is
// ready, or fails.
func startDaemon(ctx context.Context, exe string, argv, env []string, logFile string) error {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o750); err != nil {
		return fmt.Errorf("log directory: %v", err)
	}
	logf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %v", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(exe, argv...)
	cmd.Env = append(env, readyFDEnv+"=3")
	cmd.Dir = "/" // keep no directory busy
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}                       // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives the helper and its terminal
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("start %s: %v", exe, err)
	}
	answer := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 1<<20))
		answer <- string(b)
	}()
	var msg string
	select {
	case msg = <-answer:
	case <-time.After(helperTimeout):
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		return fmt.Errorf("imagefs did not mount within %v; its log: %s", helperTimeout, logFile)
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		return ctx.Err()
	}
	if msg == readyMsg {
		return cmd.Process.Release()
	}
	err = cmd.Wait()
	code := 1
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		code = ee.ExitCode()
	}
	if text, ok := strings.CutPrefix(msg, errorMsg); ok {
		return &helperFailure{msg: text, code: code}
	}
	return &helperFailure{msg: fmt.Sprintf("imagefs mount exited (%v) before mounting; its log: %s", err, logFile), code: code}
}

// The daemon's side: the helper passes the write end of a pipe as
// IMAGEFS_READY_FD. The daemon writes readyMsg once mounted, or errorMsg
// and its error when it fails before that, and closes it.
const (
	readyFDEnv = "IMAGEFS_READY_FD"
	readyMsg   = "READY=1\n"
	errorMsg   = "ERROR="
)

// readyPipe is the helper's pipe, nil when not started by the helper.
var readyPipe *os.File

// openReadyPipe takes the pipe the helper passed, if any.
func openReadyPipe() {
	v := os.Getenv(readyFDEnv)
	if v == "" {
		return
	}
	os.Unsetenv(readyFDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return
	}
	syscall.CloseOnExec(fd) // not for fusermount
	readyPipe = os.NewFile(uintptr(fd), "ready")
}

// tellHelper writes msg to the helper's pipe, if any, and closes it.
func tellHelper(msg string) {
	if readyPipe == nil {
		return
	}
	_, _ = readyPipe.WriteString(msg)
	readyPipe.Close()
	readyPipe = nil
}

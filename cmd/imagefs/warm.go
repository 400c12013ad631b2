package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/fs"
)

// imagefs warm: fill a mount's persistent cache with whole images. The
// command finds the mount of each PATH and asks its daemon, through the
// control socket (POST /warm), to fetch every block of the file's current
// version; the daemon answers with a line of JSON per progress report and
// a last one with the result. Closing the connection (Ctrl-C) cancels the
// daemon's job; an unmount ends it too.

// warmRequest is the body of POST /warm.
type warmRequest struct {
	Path     string `json:"path"` // relative to the mount
	Rate     int64  `json:"rate_bytes_per_second,omitempty"`
	Parallel int    `json:"parallel,omitempty"`
}

// warmLine is one line of the answer.
type warmLine struct {
	Size    int64   `json:"size_bytes"`
	Done    int64   `json:"cached_bytes"`
	Fetched int64   `json:"fetched_bytes"`
	Elapsed float64 `json:"elapsed_seconds"`
	Final   bool    `json:"final,omitempty"`
	Error   string  `json:"error,omitempty"`
}

func lineOf(p fs.WarmProgress) warmLine {
	return warmLine{Size: p.Size, Done: p.Done, Fetched: p.Fetched, Elapsed: p.Elapsed.Seconds()}
}

// handleWarm serves POST /warm.
func (d *daemon) handleWarm(w http.ResponseWriter, r *http.Request) {
	var req warmRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "bad warm request: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Read the body to its end, so that the server notices when the
	// client goes away (Ctrl-C) and cancels the request's context.
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	fl, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(l warmLine) {
		if err := enc.Encode(l); err != nil {
			cancel() // nobody listens any more
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
	o := fs.WarmOptions{Rate: req.Rate, Parallel: req.Parallel, Progress: func(p fs.WarmProgress) { send(lineOf(p)) }}
	d.log.Info("warm started", "path", req.Path, "rate", req.Rate)
	p, err := d.root.Warm(ctx, req.Path, o)
	last := lineOf(p)
	last.Final = true
	if err != nil {
		last.Error = err.Error()
		d.log.Warn("warm failed", "path", req.Path, "err", err)
	}
	send(last)
}

func warmCommand() *cli.Command {
	var runDir string
	var rate Size
	var delay time.Duration
	var quiet bool
	var parallel int
	return &cli.Command{
		Name:      "warm",
		Usage:     "fill a mount's persistent cache (--cache-dir) with whole images",
		ArgsUsage: "PATH...",
		Description: "Asks the daemon of the mount that holds each PATH to fetch every block of the file's\n" +
			"current version into its cache directory, skipping the blocks already there. A directory\n" +
			"warms every file below it. Ctrl-C stops the daemon's job; what was fetched stays cached.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "run-dir", EnvVars: []string{"IMAGEFS_RUN_DIR"}, Value: defaultRunDir, Destination: &runDir,
				Usage: "directory of the mounts' control sockets (as given to imagefs mount)"},
			newSettingFlag("", "rate", "IMAGEFS_WARM_RATE", "0", &rate,
				"bytes per second to fetch at most, per file (e.g. 100MiB; 0: as fast as Swift serves)"),
			&cli.DurationFlag{Name: "random-delay", Destination: &delay,
				Usage: "wait a random time between 0 and this before starting, so that a fleet of hosts does not start at once"},
			&cli.IntFlag{Name: "parallel", Value: 4, Destination: &parallel,
				Usage: "ranged GETs (16MiB each) in flight per file"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Destination: &quiet, Usage: "print nothing but errors"},
		},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return &usageError{msg: err.Error(), cmd: "warm"}
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return &usageError{msg: "warm needs at least one PATH (a file or directory on an imagefs mount)", cmd: "warm"}
			}
			switch {
			case rate.Err() != nil:
				return &usageError{msg: fmt.Sprintf("--rate: %v", rate.Err()), cmd: "warm"}
			case rate.Bytes() < 0:
				return &usageError{msg: "--rate must not be negative", cmd: "warm"}
			case delay < 0:
				return &usageError{msg: fmt.Sprintf("--random-delay %v: must not be negative", delay), cmd: "warm"}
			case parallel < 1 || parallel > 64:
				return &usageError{msg: fmt.Sprintf("--parallel %d: must be between 1 and 64", parallel), cmd: "warm"}
			}
			jobs, err := warmJobs(c.Args().Slice())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			out := io.Discard
			if !quiet {
				out = os.Stderr
			}
			if delay > 0 {
				wait := rand.N(delay)
				fmt.Fprintf(out, "waiting %v before warming (--random-delay %v)\n", wait.Round(time.Millisecond), delay)
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return errors.New("warm cancelled before it started")
				}
			}
			tty := !quiet && isTerminal(os.Stderr)
			for _, j := range jobs {
				req := warmRequest{Path: j.rel, Rate: rate.Bytes(), Parallel: parallel}
				if err := warmOne(ctx, runDir, j, req, out, tty, quiet); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// warmJob is one file to warm: its mount and its path in it.
type warmJob struct {
	arg        string // as given (or found below a directory given)
	mountpoint string
	rel        string
}

// warmJobs finds the mount of every path, and the files below the
// directories, with an error that says what is wrong with a path.
func warmJobs(args []string) ([]warmJob, error) {
	mounts := imagefsMounts()
	var jobs []warmJob
	for _, a := range args {
		abs, err := filepath.Abs(a)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(abs)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%s does not exist", a)
			}
			return nil, fmt.Errorf("%s: %v", a, err)
		}
		mp, fstype := mountOf(abs, mounts)
		if fstype != "fuse.imagefs" {
			return nil, fmt.Errorf("%s is not on an imagefs mount (it is on a %s filesystem at %s): warm works on the files of an imagefs mount", a, fstype, mp)
		}
		if !st.IsDir() {
			if !st.Mode().IsRegular() {
				return nil, fmt.Errorf("%s is not a regular file", a)
			}
			jobs = append(jobs, warmJob{arg: a, mountpoint: mp, rel: relTo(mp, abs)})
			continue
		}
		n := len(jobs)
		err = filepath.WalkDir(abs, func(p string, de iofs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if de.Type().IsRegular() {
				jobs = append(jobs, warmJob{arg: filepath.Join(a, relTo(abs, p)), mountpoint: mp, rel: relTo(mp, p)})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list %s: %v", a, err)
		}
		if len(jobs) == n {
			return nil, fmt.Errorf("%s is a directory with no files below it: nothing to warm", a)
		}
	}
	return jobs, nil
}

func relTo(base, p string) string {
	r, err := filepath.Rel(base, p)
	if err != nil || r == "." {
		return ""
	}
	return filepath.ToSlash(r)
}

// imagefsMounts returns the mounts of this host: mountpoint -> fstype
// (the last mount on a directory wins, as the kernel shows it).
func imagefsMounts() map[string]string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	m := map[string]string{}
	if err != nil {
		return m
	}
	for _, line := range splitLines(string(b)) {
		f := fields(line)
		if len(f) <= 4 {
			continue
		}
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				m[unescapeMount(f[4])] = f[i+1]
			}
		}
	}
	return m
}

// mountOf is the mount that holds abs: the longest mountpoint above it.
func mountOf(abs string, mounts map[string]string) (mountpoint, fstype string) {
	best := ""
	for mp := range mounts {
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return "/", "unknown"
	}
	return best, mounts[best]
}

// warmOne asks the daemon of j's mount to warm j and shows its progress.
func warmOne(ctx context.Context, runDir string, j warmJob, req warmRequest, out io.Writer, tty, quiet bool) error {
	sock := socketPath(runDir, j.mountpoint)
	if _, err := os.Stat(sock); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("permission denied on the control socket %s of %s: run imagefs warm as root (or as the daemon's user)", sock, j.mountpoint)
		}
		return fmt.Errorf("the imagefs daemon of %s has no control socket %s: it was started with another --run-dir (give the same --run-dir or IMAGEFS_RUN_DIR)", j.mountpoint, sock)
	}
	body, _ := json.Marshal(req)
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://imagefs/warm", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("warm %s cancelled", j.arg)
		}
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("permission denied on the control socket %s of %s: run imagefs warm as root", sock, j.mountpoint)
		}
		return fmt.Errorf("ask the imagefs daemon of %s (%s): %v", j.mountpoint, sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		return fmt.Errorf("the imagefs daemon of %s is too old to warm files: restart it with this version", j.mountpoint)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the imagefs daemon of %s answered %s: %s", j.mountpoint, resp.Status, strings.TrimSpace(string(msg)))
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var l warmLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("the imagefs daemon of %s answered garbage: %v", j.mountpoint, err)
		}
		if l.Final {
			if tty {
				fmt.Fprint(out, "\r\033[K")
			}
			if l.Error != "" {
				return errors.New(l.Error)
			}
			if !quiet {
				fmt.Fprintf(os.Stdout, "warmed %s: %s cached, %s fetched from Swift in %.1fs (%s/s)\n", j.arg, size(l.Done), size(l.Fetched),
					l.Elapsed, size(int64(float64(l.Fetched)/max(l.Elapsed, 0.001))))
			}
			return nil
		}
		line := progressText(j.arg, l)
		if tty {
			fmt.Fprintf(out, "\r\033[K%s", line)
		} else {
			fmt.Fprintln(out, line)
		}
	}
	if ctx.Err() != nil {
		if tty {
			fmt.Fprintln(out)
		}
		return fmt.Errorf("warm %s cancelled: the blocks fetched so far stay cached", j.arg)
	}
	return fmt.Errorf("the imagefs daemon of %s stopped answering during the warm of %s (%v): it was stopped or unmounted", j.mountpoint, j.arg, sc.Err())
}

// progressText is one progress line: bytes cached, rate, ETA.
func progressText(arg string, l warmLine) string {
	pct := 100.0
	if l.Size > 0 {
		pct = 100 * float64(l.Done) / float64(l.Size)
	}
	rate := float64(l.Fetched) / max(l.Elapsed, 0.001)
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(l.Size-l.Done)/rate) * time.Second).Round(time.Second).String()
	}
	return fmt.Sprintf("%s: %s of %s cached (%.0f%%), %s/s, ETA %s", arg, size(l.Done), size(l.Size), pct, size(int64(rate)), eta)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

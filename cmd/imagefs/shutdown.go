package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stopping (SIGTERM, SIGINT):
//
//  1. Files open on this mount are given until --shutdown-timeout to be
//     closed (their close commits them): the unmount is refused while they
//     are. At the timeout their uploads are abandoned and the mount
//     detached.
//  2. Other mount namespaces may still hold the mount: libvirt starts every
//     qemu in its own, a copy of the mounts present when the VM started.
//     Detaching it here does not end those copies. The daemon names the
//     processes that hold them and keeps serving them until they let go
//     (the VMs stop): the safe default, since its exit would break their
//     disks. --holder-timeout bounds that wait; a second SIGTERM or SIGINT
//     ends it at once. Then the daemon exits, and the kernel ends
//     the connection: what those processes still read or write on the
//     mount fails with ENOTCONN.
//  3. Under systemd, TimeoutStopSec bounds everything: SIGKILL then has
//     the same effect for the VMs, and leaves a dead mount here that the
//     unit's ExecStopPost clears. The unit sets --holder-timeout below
//     TimeoutStopSec, so that the daemon exits cleanly first.
//
// The daemon never waits on go-fuse's Server.Unmount: it waits for the
// serve loops, which the other namespaces keep alive.
//
// Why a restart cannot hand the mount to a new daemon (go-fuse v2.12.1;
// contrib/handover.md has the details and a prototype, the README's
// "Restarting and upgrading" what the operator does): the kernel sends
// FUSE_INIT once per connection, while fuse.NewServer always reads the
// first request as INIT (fuse/server.go:272, 409-431),
// also for an inherited /dev/fd/N (fuse/mount_linux.go:186); the kernel
// keeps using the node ids and file handles the old daemon gave out,
// which a new bridge does not know (a panic answered with EIO:
// fs/bridge.go:351, fs/identitytable.go:225, fuse/protocol-server.go:70)
// or, allocated again from its counter (fs/identitytable.go:136), may
// give to another file; go-fuse has no API to restore them, nor to stop
// reading requests without closing the fd, nor to ask the kernel to
// resend the ones in flight (FUSE_NOTIFY_RESEND). Keeping the /dev/fuse
// fd in systemd's fd store would only turn ENOTCONN into reads that hang
// or fail with EIO.

// holderReport is how often the wait for other mount namespaces repeats
// which processes it waits for.
const holderReport = time.Minute

// mountDevice is the device number of the FUSE mount at dir (0 if
// unknown): it names the mount in every namespace's mountinfo.
func mountDevice(dir string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return 0
	}
	return st.Dev
}

// shutdown stops the mount as described above.
func shutdown(log *slog.Logger, root mountRoot, cfg *Config, dev uint64, unmounted <-chan struct{}) {
	// The first signal is runMount's; a second one forces the stop.
	force := make(chan os.Signal, 1)
	signal.Notify(force, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(force)

	deadline := time.Now().Add(cfg.Shutdown)
	forced := false
	for {
		err := unmountDir(cfg.Mountpoint, false)
		if err == nil {
			break
		}
		if forced || time.Now().After(deadline) {
			// Bounded: Swift may be what stalls.
			actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			n := root.Abort(actx)
			cancel()
			log.Error("files still open at shutdown; their uploads are abandoned and the mount detached",
				"abandoned_uploads", n, "forced", forced, "err", err)
			_ = unmountDir(cfg.Mountpoint, true)
			break
		}
		select {
		case <-force:
			forced = true
		case <-time.After(500 * time.Millisecond):
		}
	}
	select {
	case <-unmounted:
		return
	case <-time.After(200 * time.Millisecond):
	}
	if !forced {
		serveHolders(log, cfg.HolderTimeout, dev, unmounted, force)
	} else if holders := mountHolders(dev); len(holders) > 0 {
		log.Error("forced stop: exiting while other mount namespaces still use the mount; their reads and writes on it now fail (ENOTCONN)",
			"processes", holders)
	}
}

// serveHolders keeps serving the processes of other mount namespaces that
// hold the mount of device dev until they let go, the timeout (0: none)
// passes, or a signal comes on force. It says which processes it waits
// for, in the log and in systemd's status line, and again when they
// change. It also returns when no other namespace holds the mount but the
// connection lives on (files held open here after a forced detach): they
// are not worth keeping the daemon for.
func serveHolders(log *slog.Logger, timeout time.Duration, dev uint64, unmounted <-chan struct{}, force <-chan os.Signal) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	if n := unseenProcesses(); n > 0 {
		log.Warn("cannot see the mount namespaces of other users' processes (the daemon does not run as root): VMs among them are not waited for",
			"unseen_processes", n)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, reported := "", time.Time{}
	for {
		holders := mountHolders(dev)
		if len(holders) == 0 {
			if last != "" {
				log.Info("the other mount namespaces let go of the mount")
			}
			return
		}
		if now := strings.Join(holders, ", "); now != last || time.Since(reported) >= holderReport {
			until := "until they let go (stop or migrate the VMs first); a second SIGTERM or SIGINT stops at once"
			if timeout > 0 {
				until = "until they let go or the holder timeout (--holder-timeout " + timeout.String() + "); a second SIGTERM or SIGINT stops at once"
			}
			log.Warn("other mount namespaces still use the mount (libvirt runs each VM in its own): serving them "+until,
				"processes", holders, "holder_timeout", timeout)
			sdNotify(log, "STATUS=stopping: serving processes of other mount namespaces: "+now)
			last, reported = now, time.Now()
		}
		select {
		case <-unmounted:
			log.Info("the other mount namespaces let go of the mount")
			return
		case <-expired:
			log.Error("holder timeout: exiting while other mount namespaces still use the mount; their reads and writes on it now fail (ENOTCONN)",
				"processes", mountHolders(dev), "holder_timeout", timeout)
			return
		case <-force:
			log.Error("second signal: exiting while other mount namespaces still use the mount; their reads and writes on it now fail (ENOTCONN)",
				"processes", mountHolders(dev))
			return
		case <-tick.C:
		}
	}
}

// unmountDir unmounts dir in this namespace (lazy: detaches it even while
// busy). As root with mount(2); otherwise with fusermount.
func unmountDir(dir string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = syscall.MNT_DETACH
		}
		return syscall.Unmount(dir, flags)
	}
	for _, bin := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		if out, err := exec.Command(path, append(args, dir)...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return fmt.Errorf("no fusermount3 or fusermount on PATH")
}

// mountHolders describes the processes of other mount namespaces that
// still have the mount of device dev: one "pid (command)" per namespace
// (its first process), sorted. It reads /proc; what it cannot read it
// leaves out.
func mountHolders(dev uint64) []string {
	if dev == 0 {
		return nil
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	want := fmt.Sprintf("%d:%d", devMajor(dev), devMinor(dev))
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	seen := map[string]bool{self: true}
	var out []string
	for _, d := range dirs {
		ns, err := os.Readlink(d + "/ns/mnt")
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		b, err := os.ReadFile(d + "/mountinfo")
		if err != nil {
			continue
		}
		for _, line := range splitLines(string(b)) {
			if f := fields(line); len(f) > 2 && f[2] == want {
				comm, _ := os.ReadFile(d + "/comm")
				pid, _ := strconv.Atoi(filepath.Base(d))
				out = append(out, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// unseenProcesses counts the processes of other users whose mount
// namespace this one may not read (unless it runs as root): mountHolders
// cannot tell whether they hold a mount.
func unseenProcesses() int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	euid := uint32(os.Geteuid())
	n := 0
	for _, d := range dirs {
		var st syscall.Stat_t
		if syscall.Stat(d, &st) != nil || st.Uid == euid {
			continue
		}
		if _, err := os.Readlink(d + "/ns/mnt"); errors.Is(err, os.ErrPermission) {
			n++
		}
	}
	return n
}

// devMajor and devMinor split a Linux device number.
func devMajor(dev uint64) uint64 { return (dev >> 8) & 0xfff }
func devMinor(dev uint64) uint64 { return (dev & 0xff) | ((dev >> 12) & 0xfff00) }

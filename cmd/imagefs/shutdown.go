package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stopping (SIGTERM, SIGINT) always ends within --shutdown-timeout and a
// few seconds:
//
//  1. Files open on this mount are given until the timeout to be closed
//     (their close commits them): the unmount is refused while they are.
//     At the timeout their uploads are abandoned and the mount detached.
//  2. Other mount namespaces may still hold the mount: libvirt starts every
//     qemu in its own, a copy of the mounts present when the VM started.
//     Detaching it here does not end those copies; the daemon logs which
//     processes hold them and keeps serving them until the timeout, so a
//     VM can finish what it is doing (or be stopped first).
//  3. At the timeout the daemon exits anyway. The kernel then ends the
//     connection: what those processes still read or write on the mount
//     fails with ENOTCONN. Stop the VMs first, or give them a longer
//     --shutdown-timeout (and systemd a longer TimeoutStopSec).
//
// The daemon never waits on go-fuse's Server.Unmount: it waits for the
// serve loops, which the other namespaces keep alive.

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
	deadline := time.Now().Add(cfg.Shutdown)
	for {
		err := unmountDir(cfg.Mountpoint, false)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			// Bounded: Swift may be what stalls.
			actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			n := root.Abort(actx)
			cancel()
			log.Error("files still open at shutdown; their uploads are abandoned and the mount detached",
				"abandoned_uploads", n, "err", err)
			_ = unmountDir(cfg.Mountpoint, true)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	select {
	case <-unmounted:
		return
	case <-time.After(200 * time.Millisecond):
	}
	holders := mountHolders(dev)
	if len(holders) > 0 {
		log.Warn("other mount namespaces still use the mount (libvirt runs each VM in its own): serving them until the shutdown timeout",
			"processes", holders, "shutdown_timeout", cfg.Shutdown, "until", deadline.UTC().Format(time.RFC3339))
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-unmounted:
		log.Info("the other mount namespaces let go of the mount")
		return
	case <-t.C:
	}
	log.Error("shutdown timeout: exiting while other mount namespaces still use the mount; their reads and writes on it now fail (ENOTCONN)",
		"processes", mountHolders(dev))
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

// devMajor and devMinor split a Linux device number.
func devMajor(dev uint64) uint64 { return (dev >> 8) & 0xfff }
func devMinor(dev uint64) uint64 { return (dev & 0xff) | ((dev >> 12) & 0xfff00) }

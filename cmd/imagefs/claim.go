package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// claimMountpoint makes sure this is the only daemon of this host that
// serves mountpoint. Two of them would write the same leases in Swift
// (hostID: host, container, prefix, mountpoint), each with only the
// versions it has open, so that the other's could be reaped under it.
// That happens on a restart outside systemd: a stopping daemon detaches
// the mount, but keeps serving the VMs that still use their copies of it
// (shutdown.go), and the mountpoint is free for a new one.
//
// The claim is an abstract unix socket (Linux; one per network
// namespace): the kernel releases it when the daemon exits, even by
// SIGKILL, and its peer credentials name the daemon that holds it.
// Close it when the mount is no longer served.
func claimMountpoint(mountpoint string) (*net.UnixListener, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(abs))
	addr := &net.UnixAddr{Name: "@imagefs/mountpoint/" + hex.EncodeToString(sum[:12]), Net: "unix"}
	l, err := net.ListenUnix("unix", addr)
	if err == nil {
		return l, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("claim the mountpoint %s for this daemon: %v", mountpoint, err)
	}
	holder := "another imagefs process"
	if pid := claimHolder(addr); pid > 0 {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		holder = fmt.Sprintf("imagefs pid %d (%s)", pid, strings.TrimSpace(string(comm)))
	}
	return nil, fmt.Errorf("%s still serves %s, for processes of other mount namespaces (VMs) that use the previous mount there: "+
		"a second daemon would overwrite its leases in Swift. Wait until it exits (the VMs stop), or stop it at once with a second SIGTERM "+
		"(their reads then fail with ENOTCONN)", holder, mountpoint)
}

// claimHolder is the pid of the process that listens on addr (0 if
// unknown), from the peer credentials of a connection to it.
func claimHolder(addr *net.UnixAddr) int {
	c, err := net.DialUnix("unix", nil, addr)
	if err != nil {
		return 0
	}
	defer c.Close()
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	_ = raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// holdersCommand lists the processes of other mount namespaces (VMs) that
// hold a mount: what a stop or restart of its daemon would break (see
// shutdown.go). Its exit status makes it a guard in scripts:
// `imagefs holders /var/lib/images && systemctl restart imagefs@images`.
func holdersCommand() *cli.Command {
	return &cli.Command{
		Name:      "holders",
		Usage:     "list the processes of other mount namespaces (VMs) that use a mount; exit 1 if there are any",
		ArgsUsage: "MOUNTPOINT",
		Description: "A daemon that stops (systemctl stop, restart, a package upgrade) ends the mount for\n" +
			"them too: libvirt runs each qemu in its own mount namespace, with its own copy of\n" +
			"the mount. Prints one \"PID (COMMAND)\" per namespace and exits 1 if there is one,\n" +
			"0 if none: stop or migrate those VMs before restarting imagefs.",
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &usageError{msg: err.Error(), cmd: "holders"}
		},
		Action: func(cc *cli.Context) error {
			if cc.NArg() != 1 {
				return &usageError{msg: fmt.Sprintf("holders needs exactly one MOUNTPOINT, got %d argument(s)", cc.NArg()), cmd: "holders"}
			}
			return runHolders(cc.Args().Get(0), os.Stdout)
		},
	}
}

// runHolders prints the holders of the mount at dir to out; it fails if
// there are any, or if dir is not a mountpoint.
func runHolders(dir string, out io.Writer) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if mounted, err := isMountpoint(abs); err != nil || !mounted {
		return fmt.Errorf("%s is not a mountpoint in this mount namespace: give the mountpoint of the imagefs mount (e.g. /var/lib/images)", dir)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(abs, &st); err != nil {
		return fmt.Errorf("%s: %v (a dead FUSE mount answers ENOTCONN: whoever held it has lost it already)", dir, err)
	}
	holders := mountHolders(st.Dev)
	if len(holders) > 0 {
		fmt.Fprintln(out, strings.Join(holders, "\n"))
	}
	if n := unseenProcesses(); n > 0 {
		return fmt.Errorf("cannot see the mount namespaces of %d processes of other users, which may use %s: run imagefs holders as root", n, dir)
	}
	if len(holders) == 0 {
		return nil
	}
	return fmt.Errorf("%d process(es) of other mount namespaces use %s (listed above): stopping or restarting its imagefs now would make their reads and writes fail (ENOTCONN); stop or migrate them first",
		len(holders), dir)
}

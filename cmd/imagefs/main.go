// Command imagefs mounts a Swift container of virtual-machine images as a
// filesystem. See README.md.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// usageError is a mistake in the command line: exit status 2.
type usageError struct {
	msg string
	cmd string // the subcommand whose help to point to; "" means mount
}

func (e *usageError) Error() string { return e.msg }

func main() {
	args := os.Args
	if filepath.Base(args[0]) == helperName {
		// util-linux's mount runs /sbin/mount.fuse.imagefs (helper.go).
		args = append([]string{"imagefs", "mount-helper"}, args[1:]...)
	}
	openReadyPipe()
	app := newApp()
	if err := app.Run(args); err != nil {
		os.Exit(report(err))
	}
}

// report prints err for an operator (one line per problem, no stack) and
// returns the exit status. A daemon started by the mount helper also
// sends the message to the helper, which prints it the same way.
func report(err error) int {
	msg := strings.TrimSpace(err.Error())
	tellHelper(errorMsg + msg)
	for _, line := range strings.Split(msg, "\n") {
		fmt.Fprintf(os.Stderr, "imagefs: %s\n", line)
	}
	var ue *usageError
	if errors.As(err, &ue) {
		cmd := ue.cmd
		if cmd == "" {
			cmd = "mount"
		}
		fmt.Fprintf(os.Stderr, "imagefs: run 'imagefs %s --help' for usage\n", cmd)
		return 2
	}
	var hf *helperFailure
	if errors.As(err, &hf) {
		return hf.code
	}
	return 1
}

// version is the commit the binary was built from (Go stamps it when
// building from a git checkout), with "+dirty" for uncommitted changes.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, when, dirty := "", "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return bi.Main.Version // "(devel)" without VCS information
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return fmt.Sprintf("%s (%s, %s)", rev, when, bi.GoVersion)
}

func newApp() *cli.App {
	var cfg, trustCfg, checkCfg Config
	return &cli.App{
		Name:    "imagefs",
		Usage:   "virtual-machine images in OpenStack Swift, as files",
		Version: version(),
		// Errors are printed by main, once, without usage noise.
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true,
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return &usageError{msg: err.Error()}
		},
		Commands: []*cli.Command{
			{
				Name:      "mount",
				Usage:     "mount a container (or a prefix of it) and serve it until unmounted",
				ArgsUsage: "CONTAINER[/PREFIX] MOUNTPOINT | --account MOUNTPOINT",
				Description: "Runs in the foreground. SIGTERM or SIGINT (or umount) unmounts and exits 0; VMs in other\n" +
					"mount namespaces that still use the mount are served until they let go (--holder-timeout).\n" +
					"Credentials come from the OS_* environment variables of an openrc file, or the flags.",
				Flags: mountFlags(&cfg),
				OnUsageError: func(c *cli.Context, err error, _ bool) error {
					return &usageError{msg: err.Error()}
				},
				Action: func(c *cli.Context) error {
					if cfg.Account {
						if c.NArg() != 1 {
							return &usageError{msg: fmt.Sprintf("mount --account needs only MOUNTPOINT (the account is the credentials' project), got %d argument(s)", c.NArg())}
						}
						cfg.Mountpoint = c.Args().Get(0)
						return runMount(c.Context, &cfg)
					}
					if c.NArg() != 2 {
						return &usageError{msg: fmt.Sprintf("mount needs CONTAINER[/PREFIX] and MOUNTPOINT, got %d argument(s)", c.NArg())}
					}
					cfg.Container, cfg.Prefix, _ = strings.Cut(c.Args().Get(0), "/")
					cfg.Mountpoint = c.Args().Get(1)
					return runMount(c.Context, &cfg)
				},
			},
			helperCommand(),
			gcCommand(),
			statusCommand(),
			warmCommand(),
			holdersCommand(),
			trustCommand(&trustCfg),
			configCommand(&checkCfg),
		},
	}
}

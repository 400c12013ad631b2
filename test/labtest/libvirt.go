package labtest

// VMs for the integration tests: Debian 12's libvirt (libvirtd 9.0 with the
// qemu driver, qemu 7.2) started without systemd, as an operator's host
// would run it: /etc/libvirt/qemu.conf untouched (qemu runs as
// libvirt-qemu, dynamic_ownership and remember_owner on, the DAC security
// driver; AppArmor only where the kernel has it).
//
//	l := labtest.StartLibvirt(t)
//	dom, err := l.CreateDomain(t, labtest.DomainOpts{Disks: []labtest.Disk{{Path: p, ReadOnly: true}}})
//	if err != nil { ... libvirt's error text ... }
//	err = dom.WaitDiskRead("vda", 30*time.Second)
//
// What the harness does that a host with systemd does not need:
//   - libvirtd and virtlogd are background processes of the test, with
//     their own configuration and sockets in a temporary directory
//     (connection URI qemu:///system?socket=...); the qemu driver's state
//     (/run/libvirt/qemu, /var/lib/libvirt/qemu, /var/log/libvirt/qemu) is
//     the system's, so one daemon runs at a time: a lock file serializes
//     test processes, and the tests of one process share the daemon.
//   - /dev/kvm, when it exists, is made root:kvm 0660 as Debian's udev rule
//     makes it (libvirt-qemu is in group kvm). On these machines it is
//     root 0600: libvirt 9.0 then finds KVM when it probes qemu but not
//     when it checks the cache, so it probes qemu again on every lookup
//     and a domain takes ~50 s instead of ~0.5 s to start. It is left so
//     (it is the distribution's setting, and restoring it would cost the
//     next run the re-probe). Domains are type 'qemu' (TCG) regardless.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DomainPrefix starts the name of every domain the harness creates; a
// daemon of the harness destroys leftovers with it (from a test process
// that was killed) when it starts.
const DomainPrefix = "imagefs-it-"

const (
	libvirtLockFile  = "/run/lock/imagefs-labtest-libvirt.lock"
	libvirtStateFile = "/run/imagefs-labtest-libvirt.pids" // "pid dir" of the daemons of the running (or last) harness
	virtlogdSocket   = "/run/libvirt/virtlogd-sock"        // fixed for a privileged virtlogd
	qemuLogDir       = "/var/log/libvirt/qemu"
	qemuRunDir       = "/run/libvirt/qemu"
)

// libvirtPackages are Debian 12's packages for libvirt with qemu, as an
// operator installs them (libvirt-daemon-system brings qemu.conf, the
// libvirt-qemu user and the kvm group).
var libvirtPackages = []string{"libvirt-daemon-system", "libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients", "qemu-system-x86", "qemu-utils"}

// Libvirt is a libvirt daemon started by the harness.
type Libvirt struct {
	URI string // for virsh -c
	Dir string // configuration, sockets and logs of the daemons
	Log string // libvirtd's log (warnings and errors)

	libvirtd, virtlogd *exec.Cmd
	libvirtdDone       chan struct{}
	lock               *os.File

	mu   sync.Mutex
	qemu map[string]int // domain name -> qemu pid, of every domain started
}

var shared struct {
	sync.Mutex
	refs int
	l    *Libvirt
}

// StartLibvirt installs libvirt and qemu if they are missing, starts a
// libvirt daemon (or shares the one another test of this process started)
// and waits until virsh answers. The daemon stops, with every qemu it
// started, when the last test using it ends.
func StartLibvirt(t testing.TB) *Libvirt {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.l == nil {
		l, err := startLibvirt(t)
		if err != nil {
			t.Fatalf("libvirt: %v", err)
		}
		shared.l = l
	}
	shared.refs++
	l := shared.l
	t.Cleanup(func() {
		shared.Lock()
		defer shared.Unlock()
		if t.Failed() {
			l.DumpLog(t)
		}
		if shared.refs--; shared.refs == 0 {
			l.stop(t)
			shared.l = nil
		}
	})
	return l
}

// InstallLibvirt installs the packages libvirt and qemu need, if missing
// (instant when they are installed). Package scripts are not allowed to
// start daemons.
func InstallLibvirt(t testing.TB) {
	t.Helper()
	missing := missingPackages(libvirtPackages)
	if len(missing) == 0 {
		return
	}
	if !isInstalled("libvirt-daemon-system") && !isInstalled("libvirt-daemon-system-systemd") {
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			// Without it, apt picks libvirt-daemon-system-systemd, which
			// pulls systemd-sysv: a new init on a machine without systemd.
			missing = append(missing, "libvirt-daemon-system-sysv")
		}
	}
	t.Logf("libvirt: installing %s", strings.Join(missing, " "))
	start := time.Now()
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Lstat(policy); errors.Is(err, fs.ErrNotExist) {
		// invoke-rc.d asks policy-rc.d first; 101 means "not allowed".
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# temporary, created by imagefs test/labtest (libvirt.go)\nexit 101\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(policy)
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	apt := func(args ...string) error {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, tail(string(out), 4000))
		}
		return nil
	}
	if err := apt("update", "-qq", "-o", "DPkg::Lock::Timeout=300"); err != nil {
		t.Logf("libvirt: %v (installing from the current package lists)", err)
	}
	args := []string{"install", "-y", "-qq", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confdef",
		"-o", "Dpkg::Options::=--force-confold", "-o", "DPkg::Lock::Timeout=300"}
	if err := apt(append(args, missing...)...); err != nil {
		t.Fatal(err)
	}
	if still := missingPackages(libvirtPackages); len(still) > 0 {
		t.Fatalf("libvirt: still missing after apt-get install: %s", strings.Join(still, " "))
	}
	t.Logf("libvirt: installed in %v", time.Since(start).Round(time.Second))
}

func missingPackages(pkgs []string) []string {
	// dpkg-query fails when it knows none of a name, but still prints the others.
	out, _ := exec.Command("dpkg-query", append([]string{"-W", "-f=${Package} ${db:Status-Status}\n"}, pkgs...)...).Output()
	ok := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "installed" {
			ok[f[0]] = true
		}
	}
	var missing []string
	for _, p := range pkgs {
		if !ok[p] {
			missing = append(missing, p)
		}
	}
	return missing
}

func isInstalled(p string) bool { return len(missingPackages([]string{p})) == 0 }

func startLibvirt(t testing.TB) (*Libvirt, error) {
	InstallLibvirt(t)
	lock, err := takeLock(t)
	if err != nil {
		return nil, err
	}
	l := &Libvirt{lock: lock, qemu: map[string]int{}}
	ok := false
	defer func() {
		if !ok {
			l.stop(t)
		}
	}()
	killStaleDaemons(t)
	if pid, name := foreignLibvirtd(); pid != 0 {
		return nil, fmt.Errorf("a libvirt daemon that the harness did not start is running (%s, pid %d): the qemu driver's "+
			"state in %s can have one owner only; stop it for the tests", name, pid, qemuRunDir)
	}
	fixKVMDevice(t)
	if l.Dir, err = os.MkdirTemp("", "imagefs-libvirt-"); err != nil {
		return nil, err
	}
	l.Log = filepath.Join(l.Dir, "libvirtd.log")
	l.URI = "qemu:///system?socket=" + filepath.Join(l.Dir, "libvirt-sock")

	// virtlogd collects qemu's stdout/stderr (stdio_handler = "logd"); a
	// privileged libvirtd does not spawn it. One that already runs (the
	// host's) serves us as well.
	if !dialable(virtlogdSocket) {
		conf := filepath.Join(l.Dir, "virtlogd.conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf("log_outputs = \"3:file:%s/virtlogd.log\"\n", l.Dir)), 0o600); err != nil {
			return nil, err
		}
		l.virtlogd, err = l.startDaemon("virtlogd", "-f", conf, "-p", filepath.Join(l.Dir, "virtlogd.pid"))
		if err != nil {
			return nil, err
		}
		for deadline := time.Now().Add(15 * time.Second); !dialable(virtlogdSocket); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("virtlogd did not listen on %s within 15 s:\n%s", virtlogdSocket, l.daemonOutput("virtlogd"))
			}
		}
	}

	conf := filepath.Join(l.Dir, "libvirtd.conf")
	// Only the daemon's own settings: sockets in l.Dir, no polkit (the
	// tests are root), warnings and errors in l.Log. The qemu driver keeps
	// Debian's /etc/libvirt/qemu.conf.
	cfg := fmt.Sprintf(`unix_sock_dir = %q
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:%s"
`, l.Dir, l.Log)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	l.libvirtd, err = l.startDaemon("libvirtd", "-f", conf, "-p", filepath.Join(l.Dir, "libvirtd.pid"))
	if err != nil {
		return nil, err
	}
	l.libvirtdDone = make(chan struct{})
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(l.libvirtdDone) }(l.libvirtd)
	l.writeState()

	// The first answer can take a few seconds more: libvirt probes the qemu
	// binaries once (cached in /var/cache/libvirt/qemu/capabilities).
	start := time.Now()
	for {
		if _, err := l.Virsh("version"); err == nil {
			break
		} else if time.Since(start) > 90*time.Second {
			return nil, fmt.Errorf("virsh does not answer after 90 s: %v\n%s", err, l.daemonOutput("libvirtd"))
		}
		select {
		case <-l.libvirtdDone:
			return nil, fmt.Errorf("libvirtd exited at start:\n%s", l.daemonOutput("libvirtd"))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("libvirt: libvirtd (pid %d) answers on %s after %v", l.libvirtd.Process.Pid, l.URI, time.Since(start).Round(10*time.Millisecond))
	// Domains of a test process that was killed: the new daemon reattached
	// to their qemu.
	for _, name := range l.domainNames() {
		if strings.HasPrefix(name, DomainPrefix) {
			t.Logf("libvirt: destroying %s, left by an earlier run", name)
			_, _ = l.Virsh("destroy", name)
		}
	}
	ok = true
	return l, nil
}

// startDaemon starts a libvirt daemon in the foreground of its own process
// group, its stdout and stderr in Dir/NAME.out.
func (l *Libvirt) startDaemon(name string, args ...string) (*exec.Cmd, error) {
	out, err := os.Create(filepath.Join(l.Dir, name+".out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %v", name, err)
	}
	return cmd, nil
}

func (l *Libvirt) daemonOutput(name string) string {
	var b strings.Builder
	for _, f := range []string{name + ".out", name + ".log"} {
		if s, err := os.ReadFile(filepath.Join(l.Dir, f)); err == nil && len(s) > 0 {
			fmt.Fprintf(&b, "--- %s:\n%s\n", f, tail(string(s), 8000))
		}
	}
	return b.String()
}

// takeLock serializes the harnesses of concurrent test processes.
func takeLock(t testing.TB) (*os.File, error) {
	f, err := os.OpenFile(libvirtLockFile, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for logged := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s (another test process runs libvirt?): %v", libvirtLockFile, err)
		}
		if !logged {
			t.Logf("libvirt: waiting for another test process's libvirt daemon (%s)", libvirtLockFile)
			logged = true
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (l *Libvirt) writeState() {
	var b strings.Builder
	for _, c := range []*exec.Cmd{l.libvirtd, l.virtlogd} {
		if c != nil && c.Process != nil {
			fmt.Fprintf(&b, "%d %s\n", c.Process.Pid, l.Dir)
		}
	}
	_ = os.WriteFile(libvirtStateFile, []byte(b.String()), 0o644)
}

// killStaleDaemons kills the daemons of an earlier harness whose test
// process was killed before its cleanup: those in the state file whose
// command line still names that harness's directory.
func killStaleDaemons(t testing.TB) {
	b, err := os.ReadFile(libvirtStateFile)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		if pid > 0 && strings.Contains(cmdline(pid), f[1]) {
			t.Logf("libvirt: killing %s (pid %d), left by an earlier run", strings.Fields(cmdline(pid))[0], pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
		if strings.HasPrefix(f[1], filepath.Join(os.TempDir(), "imagefs-libvirt-")) {
			_ = os.RemoveAll(f[1])
		}
	}
	_ = os.Remove(libvirtStateFile)
}

// foreignLibvirtd finds a libvirt daemon with the qemu driver that the
// harness did not start.
func foreignLibvirtd() (int, string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if name := strings.TrimSpace(string(comm)); (name == "libvirtd" || name == "virtqemud") && !isZombie(pid) {
			return pid, name
		}
	}
	return 0, ""
}

// fixKVMDevice gives /dev/kvm Debian's udev ownership and mode (root:kvm
// 0660) when libvirt-qemu cannot open it; see the package comment above.
func fixKVMDevice(t testing.TB) {
	var st syscall.Stat_t
	if err := syscall.Stat("/dev/kvm", &st); err != nil {
		return // no KVM at all: libvirt's view is consistent
	}
	g, err := user.LookupGroup("kvm")
	if err != nil {
		return
	}
	gid, _ := strconv.Atoi(g.Gid)
	if st.Mode&0o006 == 0o006 || (int(st.Gid) == gid && st.Mode&0o060 == 0o060) {
		return
	}
	if err := os.Chown("/dev/kvm", int(st.Uid), gid); err == nil {
		err = os.Chmod("/dev/kvm", os.FileMode(st.Mode&0o777|0o660))
	}
	if err != nil {
		t.Logf("libvirt: cannot give /dev/kvm to group kvm (%v): every domain start will re-probe qemu (~50 s)", err)
		return
	}
	t.Logf("libvirt: /dev/kvm was %04o uid %d gid %d; now root:kvm 0660, as Debian's udev sets it (else libvirt re-probes qemu at every start)",
		st.Mode&0o7777, st.Uid, st.Gid)
}

// stop destroys every domain, then stops the daemons, kills any qemu that
// outlived them and releases the lock.
func (l *Libvirt) stop(t testing.TB) {
	if l.libvirtd != nil {
		for _, name := range l.domainNames() {
			if out, err := l.Virsh("destroy", name); err != nil {
				t.Logf("libvirt: destroy %s: %v %s", name, err, out)
			}
		}
		_ = l.libvirtd.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.libvirtdDone:
		case <-time.After(20 * time.Second):
			t.Errorf("libvirt: libvirtd did not exit within 20 s of SIGTERM; killing it")
			_ = l.libvirtd.Process.Kill()
			<-l.libvirtdDone
		}
	}
	l.mu.Lock()
	for name, pid := range l.qemu {
		if strings.Contains(cmdline(pid), "guest="+name) {
			t.Errorf("libvirt: qemu of %s (pid %d) still runs after the daemon stopped; killing it", name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
	}
	l.mu.Unlock()
	if l.virtlogd != nil {
		_ = l.virtlogd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = l.virtlogd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = l.virtlogd.Process.Kill()
			<-done
		}
	}
	_ = os.Remove(libvirtStateFile)
	if l.Dir != "" {
		_ = os.RemoveAll(l.Dir) // a failed test has its log in the test output (DumpLog)
	}
	if l.lock != nil {
		l.lock.Close() // releases the flock
	}
}

// Virsh runs virsh on the daemon (at most 60 s) and returns its output; the
// error carries virsh's stderr, libvirt's error text.
func (l *Libvirt) Virsh(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "virsh", append([]string{"-q", "-c", l.URI}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return out.String(), errors.New(msg)
	}
	return out.String(), nil
}

func (l *Libvirt) domainNames() []string {
	out, err := l.Virsh("list", "--all", "--name")
	if err != nil {
		return nil
	}
	return strings.Fields(out)
}

// LogText is libvirtd's log (warnings and errors) so far.
func (l *Libvirt) LogText() string {
	b, _ := os.ReadFile(l.Log)
	return string(b)
}

// DumpLog writes the end of libvirtd's log to the test log, without the
// errors every start of the daemon logs on these machines.
func (l *Libvirt) DumpLog(t testing.TB) {
	var b strings.Builder
	for _, line := range strings.Split(l.LogText(), "\n") {
		if line != "" && !isStartupNoise(line) {
			b.WriteString(line + "\n")
		}
	}
	t.Logf("libvirtd log (%s, start-up noise left out):\n%s", l.Log, tail(b.String(), 8000))
}

// isStartupNoise: no D-Bus (firewalld, machined), no DMI tables, no dnsmasq
// (the default network is not started).
func isStartupNoise(line string) bool {
	for _, s := range []string{"virGDBusGetSystemBus", "networkStateInitialize", "udevGetDMIData", "dmidecode", "dnsmasqCapsNewFromBinary"} {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// Disk is a disk of a domain, a file.
type Disk struct {
	Path     string
	Format   string // "raw" (the default) or "qcow2"
	ReadOnly bool   // <readonly/>
	Cache    string // <driver cache=...>; "" is libvirt's default
	// Backing is the backing file of an overlay (Path, Format), given to
	// libvirt as <backingStore>; libvirt treats it as read-only.
	Backing *Disk
}

// DomainOpts describe a tiny transient VM: 1 vCPU, no network, no
// graphics, the serial console in a file, machine pc under TCG. It needs no
// OS: SeaBIOS reads the first disk's boot sector and, finding nothing
// bootable, waits.
type DomainOpts struct {
	Name      string // DomainPrefix + the test's name if empty
	MemoryMiB int    // 64 if 0
	Disks     []Disk // vda, vdb, ... (virtio)
	// Guest, when set, is booted directly (<kernel>, <initrd>, <cmdline>)
	// instead of SeaBIOS looking for a boot sector.
	Guest *Guest
}

// Domain is a transient domain (virsh create).
type Domain struct {
	L       *Libvirt
	Name    string
	XML     string
	Console string // the serial console's output file
	Pid     int    // qemu's pid
	dead    bool
}

var domainSeq struct {
	sync.Mutex
	n int
}

// CreateDomain defines and starts a transient domain. It returns libvirt's
// error text when the start fails (the error of a disk that qemu could not
// open says so, with the path); a started domain is destroyed when the test
// ends.
func (l *Libvirt) CreateDomain(t testing.TB, o DomainOpts) (*Domain, error) {
	t.Helper()
	if o.Name == "" {
		domainSeq.Lock()
		domainSeq.n++
		n := domainSeq.n
		domainSeq.Unlock()
		o.Name = fmt.Sprintf("%s%s-%d", DomainPrefix, sanitizeName(t.Name()), n)
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 64
	}
	dir := t.TempDir()
	d := &Domain{L: l, Name: o.Name, Console: filepath.Join(dir, "console.log")}
	d.XML = DomainXML(o, d.Console)
	xmlPath := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(d.XML), 0o644); err != nil {
		t.Fatal(err)
	}
	// The domain's qemu log accumulates across runs; read only this one.
	logPath := filepath.Join(qemuLogDir, o.Name+".log")
	logStart := fileSize(logPath)
	if _, err := l.Virsh("create", xmlPath); err != nil {
		msg := err.Error()
		if qlog := qemuMessages(readFrom(logPath, logStart)); qlog != "" {
			msg += "\nqemu log (without the command line):\n" + tail(qlog, 4000)
		}
		return nil, errors.New(msg)
	}
	if b, err := os.ReadFile(filepath.Join(qemuRunDir, o.Name+".pid")); err == nil {
		d.Pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	l.mu.Lock()
	l.qemu[o.Name] = d.Pid
	l.mu.Unlock()
	t.Cleanup(func() {
		if err := d.Destroy(); err != nil {
			t.Errorf("destroy %s: %v", d.Name, err)
		}
	})
	return d, nil
}

// DomainXML is the libvirt XML of a domain; console is the serial
// console's file.
func DomainXML(o DomainOpts, console string) string {
	esc := func(s string) string {
		var b bytes.Buffer
		_ = xml.EscapeText(&b, []byte(s)) // quotes too
		return b.String()
	}
	format := func(f string) string {
		if f == "" {
			return "raw"
		}
		return f
	}
	var disks strings.Builder
	for i, d := range o.Disks {
		cache := ""
		if d.Cache != "" {
			cache = fmt.Sprintf(" cache='%s'", esc(d.Cache))
		}
		fmt.Fprintf(&disks, "    <disk type='file' device='disk'>\n      <driver name='qemu' type='%s'%s/>\n      <source file='%s'/>\n",
			esc(format(d.Format)), cache, esc(d.Path))
		if b := d.Backing; b != nil {
			fmt.Fprintf(&disks, "      <backingStore type='file'>\n        <format type='%s'/>\n        <source file='%s'/>\n        <backingStore/>\n      </backingStore>\n",
				esc(format(b.Format)), esc(b.Path))
		}
		fmt.Fprintf(&disks, "      <target dev='vd%c' bus='virtio'/>\n", 'a'+i)
		if d.ReadOnly {
			disks.WriteString("      <readonly/>\n")
		}
		disks.WriteString("    </disk>\n")
	}
	boot := "    <boot dev='hd'/>\n"
	if g := o.Guest; g != nil {
		// ACPI, or the guest's poweroff only halts it (libvirt adds -no-acpi).
		boot = fmt.Sprintf("    <kernel>%s</kernel>\n    <initrd>%s</initrd>\n    <cmdline>%s</cmdline>\n  </os>\n  <features>\n    <acpi/>\n",
			esc(g.Kernel), esc(g.Initrd), esc(GuestCmdline))
	}
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
%s  </%s>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
%s    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='%s'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
`, esc(o.Name), o.MemoryMiB, boot, map[bool]string{true: "features", false: "os"}[o.Guest != nil], disks.String(), esc(console))
}

// State is virsh domstate.
func (d *Domain) State() (string, error) {
	out, err := d.L.Virsh("domstate", d.Name)
	return strings.TrimSpace(out), err
}

// WaitRunning waits until the domain runs, or returns why it does not
// (libvirt's error, qemu's log).
func (d *Domain) WaitRunning(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.State()
		switch {
		case err == nil && st == "running":
			return nil
		case err != nil || st == "shut off" || st == "crashed":
			return fmt.Errorf("domain %s is not running (%s %v); qemu log:\n%s", d.Name, st, err, d.QemuLog())
		case time.Now().After(deadline):
			return fmt.Errorf("domain %s is %q, not running, after %v", d.Name, st, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BlockStats are the read requests and bytes of a disk (virsh domblkstat).
func (d *Domain) BlockStats(target string) (rdReq, rdBytes int64, err error) {
	out, err := d.L.Virsh("domblkstat", d.Name, target)
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		v, _ := strconv.ParseInt(f[2], 10, 64)
		switch f[1] {
		case "rd_req":
			rdReq = v
		case "rd_bytes":
			rdBytes = v
		}
	}
	return rdReq, rdBytes, nil
}

// WaitDiskRead waits until the guest has read from disk target (SeaBIOS
// reads the boot sector of vda about a second after the start under TCG).
func (d *Domain) WaitDiskRead(target string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, _, err := d.BlockStats(target)
		if err != nil {
			return fmt.Errorf("domblkstat %s %s: %v", d.Name, target, err)
		}
		if n > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			st, _ := d.State()
			return fmt.Errorf("the guest read nothing from %s within %v (domain %s); qemu log:\n%s", target, timeout, st, d.QemuLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitPoweredOff waits until the guest has powered off (a transient
// domain then vanishes) and returns its lines on the console.
func (d *Domain) WaitPoweredOff(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.State()
		if err != nil || st == "shut off" {
			d.dead = true
			b, _ := os.ReadFile(d.Console)
			return GuestLines(string(b)), nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(d.Console)
			return GuestLines(string(b)), fmt.Errorf("domain %s is still %q after %v; qemu log:\n%s", d.Name, st, timeout, d.QemuLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Destroy stops the domain (virsh destroy: qemu is killed, libvirt restores
// the disks' owners). It is idempotent; the test's cleanup calls it too.
func (d *Domain) Destroy() error {
	if d.dead {
		return nil
	}
	d.dead = true
	if _, err := d.L.Virsh("destroy", d.Name); err != nil {
		if st, serr := d.State(); serr != nil || st == "shut off" {
			return nil // already gone (transient domains vanish when qemu ends)
		}
		return err
	}
	if d.Pid > 0 {
		waitGone(d.Pid, 10*time.Second)
	}
	return nil
}

// QemuLog is the end of the domain's qemu log: what libvirt and qemu
// wrote there, without qemu's command lines.
func (d *Domain) QemuLog() string {
	b, _ := os.ReadFile(filepath.Join(qemuLogDir, d.Name+".log"))
	return tail(qemuMessages(string(b)), 4000)
}

// qemuMessages drops the command lines (one argument per line, each but
// the last ending in a backslash) from a qemu log.
func qemuMessages(log string) string {
	var b strings.Builder
	for _, line := range strings.Split(log, "\n") {
		if line == "" || strings.HasSuffix(line, "\\") || strings.HasPrefix(line, "-") {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// CreateOverlay creates a qcow2 overlay of backing (format backingFormat)
// in a fresh temp directory that qemu (user libvirt-qemu) can reach.
func CreateOverlay(t testing.TB, backing, backingFormat string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "overlay.qcow2")
	RunCmd(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", backingFormat, p)
	MakeReachable(t, p)
	return p
}

// MakeReachable lets qemu (user libvirt-qemu) reach path: it adds the
// search permission for others to the directories above path that are
// inside the temp directory (t.TempDir makes them 0700). path itself (a
// mountpoint, say) is not touched.
func MakeReachable(t testing.TB, path string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for dir := filepath.Dir(filepath.Clean(path)); strings.HasPrefix(dir, tmp+"/"); dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(dir, st.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '-'
		}
	}
	if len(b) > 60 {
		b = b[:60]
	}
	return string(b)
}

func dialable(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// waitGone waits until pid has exited (its /proc entry is gone or a zombie:
// an orphan's parent is PID 1, which does not reap on these machines).
func waitGone(pid int, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil || isZombie(pid) {
			return
		}
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && strings.HasPrefix(s[i+1:], " Z ")
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

func readFrom(p string, off int64) string {
	b, err := os.ReadFile(p)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

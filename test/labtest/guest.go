package labtest

// A tiny Linux guest that boots under qemu TCG in seconds and checks its
// disk: Debian 12's cloud kernel (apt-get download, not installed: its
// virtio drivers are modules, loaded with busybox's insmod) and an
// initramfs of busybox-static. The guest's /init runs the shell script in
// the first 4 KiB of its disk /dev/vda; the script (GuestDisk) reads the
// rest of the disk, compares its SHA-256 with the one it carries, prints
// the verdict on the serial console and the guest powers off.
//
//	g := labtest.BuildGuest(t)           // cached under /var/tmp, keyed by package versions
//	img, _ := labtest.GuestDisk(t, 32<<20, 7)  // a local raw image to copy into the mount
//	res := g.Boot(t, labtest.BootOpts{Disk: p, Cache: "none"})
//	if !res.OK { ... res.Console ... }

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// guestPackages are what BuildGuest needs installed (the kernel package is
// only downloaded).
var guestPackages = []string{"busybox-static", "cpio", "qemu-system-x86"}

// guestModules are the cloud kernel's virtio modules, in dependency order.
var guestModules = []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk"}

// GuestCmdline is the kernel command line of the guest.
const GuestCmdline = "console=ttyS0 panic=-1 quiet loglevel=3"

// Guest is a kernel and an initramfs, both world-readable (libvirt-qemu
// can read them).
type Guest struct {
	Kernel, Initrd string
	Key            string // the package versions they were built from
}

const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in MODULES; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ -b /dev/vda ]; then
  echo "IMAGEFS-GUEST: up, running the script of /dev/vda"
  head -c 4096 /dev/vda | tr -d '\000' > /disk.sh
  sh /disk.sh
else
  echo "IMAGEFS-GUEST: FAIL: no /dev/vda"
fi
sleep 1
poweroff -f
`

var guestMu sync.Mutex

// BuildGuest returns the guest's kernel and initramfs, building them once
// per package versions under /var/tmp/imagefs-guest/ (the packages are
// installed if missing, the kernel package downloaded).
func BuildGuest(t testing.TB) *Guest {
	t.Helper()
	guestMu.Lock() // parallel tests of one process build it once
	defer guestMu.Unlock()
	installPackages(t, guestPackages)
	kpkg, kver := kernelPackage(t)
	bver := strings.TrimSpace(RunCmd(t, "dpkg-query", "-W", "-f=${Version}", "busybox-static"))
	key := regexp.MustCompile(`[^A-Za-z0-9._+-]`).ReplaceAllString(kpkg+"_"+kver+"_busybox_"+bver, "-")
	dir := filepath.Join("/var/tmp/imagefs-guest", key)
	g := &Guest{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"), Key: key}
	if _, err := os.Stat(g.Initrd); err == nil {
		return g
	}
	start := time.Now()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	download := func() ([]byte, error) {
		dl := exec.Command("apt-get", "download", "-q", kpkg+"="+kver)
		dl.Dir = tmp
		return dl.CombinedOutput()
	}
	if out, err := download(); err != nil {
		// Stale package lists name a version the mirror no longer has.
		t.Logf("guest: apt-get download %s=%s: %v (%s); apt-get update and again", kpkg, kver, err, strings.TrimSpace(string(out)))
		RunCmd(t, "apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=300")
		kpkg, kver = kernelPackage(t)
		if out, err := download(); err != nil {
			t.Fatalf("guest: apt-get download %s=%s: %v\n%s", kpkg, kver, err, out)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("guest: apt-get download %s left %d .deb files in %s", kpkg, len(debs), tmp)
	}
	x := filepath.Join(tmp, "x")
	RunCmd(t, "dpkg-deb", "-x", debs[0], x)
	kernels, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("guest: %s has %d kernels in /boot", kpkg, len(kernels))
	}
	out := filepath.Join(tmp, "out")
	root := filepath.Join(tmp, "root")
	for _, d := range []string{out, root + "/bin", root + "/dev", root + "/proc", root + "/sys", root + "/lib/modules"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	RunCmd(t, "cp", kernels[0], filepath.Join(out, "vmlinuz"))
	RunCmd(t, "cp", "/bin/busybox", filepath.Join(root, "bin", "busybox"))
	var loaded []string
	for _, m := range guestModules {
		found, _ := filepath.Glob(filepath.Join(x, "lib", "modules", "*", "kernel", "drivers", "*", m+".ko*"))
		if len(found) == 0 {
			found, _ = filepath.Glob(filepath.Join(x, "lib", "modules", "*", "kernel", "drivers", "*", "*", m+".ko*"))
		}
		if len(found) == 0 {
			continue // built in
		}
		dst := filepath.Join(root, "lib", "modules", m+".ko")
		switch {
		case strings.HasSuffix(found[0], ".ko"):
			RunCmd(t, "cp", found[0], dst)
		case strings.HasSuffix(found[0], ".ko.xz"):
			RunCmd(t, "sh", "-c", `xz -dc "$1" > "$2"`, "sh", found[0], dst)
		default:
			t.Fatalf("guest: module %s is %s, which busybox insmod cannot load", m, found[0])
		}
		loaded = append(loaded, m)
	}
	if len(loaded) == 0 || loaded[len(loaded)-1] != "virtio_blk" {
		t.Fatalf("guest: no virtio_blk module in %s (modules found: %v)", kpkg, loaded)
	}
	init := strings.Replace(guestInit, "MODULES", strings.Join(loaded, " "), 1)
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	RunCmd(t, "sh", "-c", `cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 > "$2"`, "sh", root, filepath.Join(out, "initrd.img"))
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if err := os.Chmod(filepath.Join(out, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(out, 0o755); err != nil {
		t.Fatal(err)
	}
	// Another test process may have built it meanwhile: either copy is good.
	if err := os.Rename(out, dir); err != nil && !errors.Is(err, os.ErrExist) && !isNotEmpty(err) {
		t.Fatal(err)
	}
	t.Logf("guest: built %s (kernel %s, modules %v) in %v", dir, kpkg, loaded, time.Since(start).Round(time.Millisecond))
	return g
}

func isNotEmpty(err error) bool { return strings.Contains(err.Error(), "directory not empty") }

// kernelPackage is the package and version that Debian's
// linux-image-cloud-amd64 depends on.
func kernelPackage(t testing.TB) (string, string) {
	out := RunCmd(t, "apt-cache", "depends", "linux-image-cloud-amd64")
	m := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*-cloud-amd64)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("guest: apt-cache depends linux-image-cloud-amd64 names no kernel package (apt-get update?):\n%s", out)
	}
	pol := RunCmd(t, "apt-cache", "policy", m[1])
	v := regexp.MustCompile(`Candidate: (\S+)`).FindStringSubmatch(pol)
	if v == nil || v[1] == "(none)" {
		t.Fatalf("guest: no candidate version of %s:\n%s", m[1], pol)
	}
	return m[1], v[1]
}

// installPackages installs the Debian packages that are missing.
func installPackages(t testing.TB, pkgs []string) {
	t.Helper()
	missing := missingPackages(pkgs)
	if len(missing) == 0 {
		return
	}
	t.Logf("installing %s", strings.Join(missing, " "))
	cmd := exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300"}, missing...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get install %s: %v\n%s", strings.Join(missing, " "), err, tail(string(out), 4000))
	}
}

// GuestDataOffset is where the checked data of a GuestDisk starts.
const GuestDataOffset = 64 << 10

// GuestDisk writes a raw disk image of size bytes (a multiple of 64 KiB)
// for the guest: a script in the first 4 KiB that checks bytes
// [64 KiB, size) against their SHA-256, and pattern data there. It returns
// the local file and the SHA-256 of the whole image.
func GuestDisk(t testing.TB, size int64, seed uint64) (string, string) {
	t.Helper()
	if size%GuestDataOffset != 0 || size <= GuestDataOffset {
		t.Fatalf("GuestDisk: size %d is not a multiple of 64 KiB above 64 KiB", size)
	}
	p := Pattern{Seed: seed, Size: size - GuestDataOffset}
	data := p.Bytes(0, p.Size)
	sum := sha256.Sum256(data)
	script := fmt.Sprintf(`echo "IMAGEFS-GUEST: checking %d bytes"
sum=$(dd if=/dev/vda bs=65536 skip=1 count=%d 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$sum" = "%s" ]; then echo "IMAGEFS-GUEST: DISK OK $sum"; else echo "IMAGEFS-GUEST: DISK BAD $sum"; fi
`, p.Size, p.Size/GuestDataOffset, hex.EncodeToString(sum[:]))
	img := make([]byte, GuestDataOffset, size)
	copy(img, script)
	img = append(img, data...)
	f := filepath.Join(t.TempDir(), "guest.raw")
	if err := os.WriteFile(f, img, 0o644); err != nil {
		t.Fatal(err)
	}
	MakeReachable(t, f)
	return f, SHA256Bytes(img)
}

// BootOpts is one boot of the guest with qemu.
type BootOpts struct {
	Disk     string // the raw image, vda
	Format   string // "raw" if empty
	Cache    string // qemu's -drive cache=; "" is qemu's default (writeback)
	AIO      string // qemu's -drive aio=; "" is qemu's default (threads)
	Writable bool   // readonly=on unless set
	Timeout  time.Duration
}

// BootResult is what the guest said.
type BootResult struct {
	OK      bool          // "DISK OK" on the console and qemu exited 0
	Took    time.Duration // from qemu's start to its exit
	Console string
	Err     error // qemu's failure, or the timeout
}

// Boot runs qemu-system-x86_64 -accel tcg with the guest and the disk,
// until the guest powers off (or the timeout, 120 s if 0).
func (g *Guest) Boot(t testing.TB, o BootOpts) BootResult {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 120 * time.Second
	}
	if o.Format == "" {
		o.Format = "raw"
	}
	drive := "file=" + strings.ReplaceAll(o.Disk, ",", ",,") + ",format=" + o.Format + ",if=virtio"
	if !o.Writable {
		drive += ",readonly=on"
	}
	if o.Cache != "" {
		drive += ",cache=" + o.Cache
	}
	if o.AIO != "" {
		drive += ",aio=" + o.AIO
	}
	console := filepath.Join(t.TempDir(), "console.log")
	args := []string{"-accel", "tcg", "-M", "pc", "-m", "128", "-nodefaults", "-no-user-config", "-display", "none",
		"-no-reboot", "-serial", "file:" + console, "-kernel", g.Kernel, "-initrd", g.Initrd, "-append", GuestCmdline,
		"-drive", drive}
	cmd := exec.Command("qemu-system-x86_64", args...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return BootResult{Err: fmt.Errorf("start qemu: %v", err)}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var res BootResult
	select {
	case err := <-done:
		res.Took = time.Since(start)
		if err != nil {
			res.Err = fmt.Errorf("qemu %s: %v: %s", strings.Join(args, " "), err, tail(stderr.String(), 2000))
		}
	case <-time.After(o.Timeout):
		_ = cmd.Process.Kill()
		<-done
		res.Took = time.Since(start)
		res.Err = fmt.Errorf("the guest did not power off within %v", o.Timeout)
	}
	b, _ := os.ReadFile(console)
	res.Console = GuestLines(string(b))
	res.OK = res.Err == nil && strings.Contains(res.Console, "IMAGEFS-GUEST: DISK OK")
	return res
}

// GuestLines are the guest's own lines on a console (the BIOS's escape
// sequences share lines with them).
func GuestLines(console string) string {
	return strings.Join(regexp.MustCompile(`IMAGEFS-GUEST: [^\r\n\x1b]*`).FindAllString(console, -1), "\n")
}

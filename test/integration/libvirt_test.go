//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// VMs on an imagefs mount, with Debian 12's libvirt as an operator gets it
// (qemu as libvirt-qemu, dynamic_ownership and remember_owner on): see
// test/labtest/libvirt.go. What libvirt 9.0's DAC driver does with a disk
// on a FUSE mount (measured with a FUSE filesystem whose errnos could be
// switched):
//
//   - chown of the image to libvirt-qemu: EPERM, EOPNOTSUPP, EROFS and
//     EINVAL are ignored (the start goes on, the file keeps its owner);
//     any other errno fails the start ("unable to set user and group to
//     '64055:64055' on '<path>': ...").
//   - remember_owner, for a writable disk only (never for <readonly/>
//     disks nor backing files): libvirt opens the image O_RDWR as root
//     (a lock; EROFS skips remembering), reads
//     trusted.libvirt.security.ref_dac and, when that answers ENODATA,
//     sets trusted.libvirt.security.{dac,timestamp_dac,ref_dac}. Only
//     ENOTSUP (EOPNOTSUPP) on the get makes libvirt skip remembering; a
//     set that fails, whatever its errno (ENOTSUP included), fails the
//     start ("Unable to set XATTR trusted.libvirt.security.dac on
//     <path>: Operation not supported"). The lock's open failing with
//     anything but EROFS fails the start as "unable to open <path>:
//     Invalid argument" (libvirt loses the errno).
//   - qemu opens a writable disk O_RDWR as libvirt-qemu: under
//     default_permissions on a root 0644 file the kernel answers EACCES
//     and the start fails with "Could not open '<path>': Permission
//     denied"; EBUSY gives "Could not open '<path>': Device or resource
//     busy".
//   - at the stop, for every disk: the O_RDWR open as root again and the
//     gets; failures there are warnings only.

// libvirtMount mounts container c with the flags and environment of
// systemd/imagefs@.service's ExecStart (--allow-other: qemu runs as
// libvirt-qemu) and lets qemu reach the mountpoint.
func libvirtMount(t *testing.T, c string) *labtest.Daemon {
	t.Helper()
	root := t.TempDir()
	u := loadUnit(t, c, root)
	argv := u.start[0] // imagefs mount FLAGS... CONTAINER MOUNTPOINT
	if len(argv) < 4 || argv[1] != "mount" {
		t.Fatalf("the unit's ExecStart is not `imagefs mount ... CONTAINER MOUNTPOINT`: %q", argv)
	}
	flags := argv[2 : len(argv)-2]
	if !slices.Contains(flags, "--allow-other") {
		t.Fatalf("the unit mounts without --allow-other (%q): qemu, user libvirt-qemu, could not open the images", flags)
	}
	if u.cacheDir != "" {
		if err := os.MkdirAll(u.cacheDir, u.cacheMode); err != nil { // systemd's CacheDirectory=
			t.Fatal(err)
		}
	}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: flags, Env: u.env})
	labtest.MakeReachable(t, d.Dir)
	return d
}

// libvirtImage copies a 16 MiB image into the mount with cp and returns
// its path on the mount and its SHA-256.
func libvirtImage(t *testing.T, d *labtest.Daemon, seed uint64) (string, string) {
	t.Helper()
	src, sum := labtest.RandomFile(t, 16<<20, seed)
	p := d.Path("disk.raw")
	labtest.RunCmd(t, "cp", src, p)
	return p, sum
}

// checkImageIntact: libvirt's opens of the image for writing (its metadata
// lock, at start and stop) left the stored object as it was.
func checkImageIntact(t *testing.T, c, name, sum string) {
	t.Helper()
	if got := labtest.SwiftDownloadSHA256(t, c, name); got != sum {
		t.Errorf("%s in Swift after the VM: sha256 %s, want %s", name, got, sum)
	}
}

// startAndRead starts a domain with disks and waits until it runs and the
// guest has read its boot disk (through imagefs).
func startAndRead(t *testing.T, l *labtest.Libvirt, disks ...labtest.Disk) *labtest.Domain {
	t.Helper()
	start := time.Now()
	dom, err := l.CreateDomain(t, labtest.DomainOpts{Disks: disks})
	if err != nil {
		t.Fatalf("the domain did not start; libvirt says:\n%v", err)
	}
	if err := dom.WaitRunning(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := dom.WaitDiskRead("vda", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("domain %s running, boot sector read, %v after virsh create", dom.Name, time.Since(start).Round(10*time.Millisecond))
	return dom
}

// TestLibvirtReadOnlyRawDisk: a <readonly/> raw disk on the mount. libvirt
// tries to chown the image (imagefs refuses, libvirt goes on), remembers
// nothing (read-only), and qemu opens it read-only: the domain starts.
func TestLibvirtReadOnlyRawDisk(t *testing.T) {
	t.Parallel()
	l := labtest.StartLibvirt(t)
	c := labtest.NewContainer(t)
	d := libvirtMount(t, c)
	img, sum := libvirtImage(t, d, 61)

	dom := startAndRead(t, l, labtest.Disk{Path: img, Format: "raw", ReadOnly: true})
	if err := dom.Destroy(); err != nil {
		t.Fatalf("virsh destroy: %v", err)
	}
	checkImageIntact(t, c, "disk.raw", sum)
}

// TestLibvirtOverlayOnMount: a local qcow2 overlay whose backing file is on
// the mount, the way Nova and most operators run VMs from a base image:
// the backing file is opened read-only, the overlay takes the writes.
func TestLibvirtOverlayOnMount(t *testing.T) {
	t.Parallel()
	l := labtest.StartLibvirt(t)
	c := labtest.NewContainer(t)
	d := libvirtMount(t, c)
	img, sum := libvirtImage(t, d, 62)
	overlay := labtest.CreateOverlay(t, img, "raw")

	dom := startAndRead(t, l, labtest.Disk{Path: overlay, Format: "qcow2", Backing: &labtest.Disk{Path: img, Format: "raw"}})
	if err := dom.Destroy(); err != nil {
		t.Fatalf("virsh destroy: %v", err)
	}
	checkImageIntact(t, c, "disk.raw", sum)
}

// TestLibvirtWritableRawDisk: a writable raw disk on the mount. imagefs
// cannot let qemu (libvirt-qemu) write a root 0644 file, so the domain may
// start (if a later imagefs allows it) or fail, but then with a reason the
// operator can act on: permission denied on that disk, not a puzzle about
// extended attributes or an "Invalid argument".
func TestLibvirtWritableRawDisk(t *testing.T) {
	t.Parallel()
	l := labtest.StartLibvirt(t)
	c := labtest.NewContainer(t)
	d := libvirtMount(t, c)
	img, sum := libvirtImage(t, d, 63)

	dom, err := l.CreateDomain(t, labtest.DomainOpts{Disks: []labtest.Disk{{Path: img, Format: "raw"}}})
	if err == nil {
		if err := dom.WaitRunning(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := dom.WaitDiskRead("vda", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("a writable disk on the mount works: domain %s runs", dom.Name)
		if err := dom.Destroy(); err != nil {
			t.Fatalf("virsh destroy: %v", err)
		}
		checkImageIntact(t, c, "disk.raw", sum)
		return
	}
	msg := err.Error()
	t.Logf("a writable disk on the mount does not start; libvirt says:\n%s", msg)
	if !strings.Contains(msg, "Permission denied") || !strings.Contains(msg, filepath.Base(img)) {
		t.Errorf("libvirt's error (above) does not say that the permission on the disk was denied: want %q and the image's path",
			"Permission denied")
	}
	// The daemon's log says what to do: libvirt's chown of the disk to
	// libvirt-qemu was refused, with the advice.
	if log := d.LogText(); !strings.Contains(log, "chown refused") || !strings.Contains(log, "read-only") {
		t.Errorf("the imagefs log does not tell the operator what to do about the writable disk:\n%s", log)
	}
	checkImageIntact(t, c, "disk.raw", sum)
}

// TestLibvirtStopWhileVMRuns: `systemctl stop` (SIGTERM) of imagefs while a
// VM started by libvirt reads its disk from the mount: the daemon names
// the qemu process that still holds the mount (in its own mount
// namespace), serves it until --holder-timeout, then exits, cleanly and
// within that timeout and a few seconds.
func TestLibvirtStopWhileVMRuns(t *testing.T) {
	t.Parallel()
	l := labtest.StartLibvirt(t)
	c := labtest.NewContainer(t)
	root := t.TempDir()
	u := loadUnit(t, c, root)
	argv := u.start[0]
	flags := append(append([]string{}, argv[2:len(argv)-2]...), "--shutdown-timeout", "5s", "--holder-timeout", "5s")
	d := labtest.Mount(t, c, labtest.MountOpts{Args: flags, Env: u.env})
	labtest.MakeReachable(t, d.Dir)
	img, _ := libvirtImage(t, d, 64)
	dom := startAndRead(t, l, labtest.Disk{Path: img, Format: "raw", ReadOnly: true})
	defer dom.Destroy()
	took := stopWithin(t, d, 20*time.Second)
	t.Logf("imagefs stopped in %v with a VM running", took)
	log := d.LogText()
	if !strings.Contains(log, "other mount namespaces still use the mount") || !strings.Contains(log, "qemu") {
		t.Errorf("the log does not name the VM's qemu as the holder:\n%s", log)
	}
}

//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestVMBootFromMount: qemu-system-x86_64 -accel tcg boots the test guest
// (labtest.BuildGuest) with its disk image on the mount, an SLO whose
// segment boundaries fall inside the guest's reads; the guest reads its
// whole disk, compares the SHA-256 that the disk carries and powers off.
// Each qemu disk mode on a fresh mount (nothing cached): cache=none
// (O_DIRECT) with the default aio=threads, aio=native and aio=io_uring,
// and qemu's default cache mode (writeback, the page cache).
func TestVMBootFromMount(t *testing.T) {
	t.Parallel()
	g := labtest.BuildGuest(t)
	c := labtest.NewContainer(t)
	local, sum := labtest.GuestDisk(t, 32<<20, 131)
	f, err := os.Open(local)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	labtest.PutSLO(t, c, "guest.raw", f, 32<<20, 5<<20+12345)

	for _, m := range []struct{ name, cache, aio string }{
		{"cache=none", "none", ""},
		{"cache=none,aio=native", "none", "native"},
		{"cache=none,aio=io_uring", "none", "io_uring"},
		{"default-cache", "", ""},
	} {
		t.Run(m.name, func(t *testing.T) {
			d := labtest.Mount(t, c, labtest.MountOpts{})
			res := g.Boot(t, labtest.BootOpts{Disk: d.Path("guest.raw"), Cache: m.cache, AIO: m.aio, Timeout: 90 * time.Second})
			if !res.OK {
				t.Fatalf("the guest did not find its disk intact (qemu: %v); its console:\n%s", res.Err, res.Console)
			}
			t.Logf("guest booted from the mount, read and checked 32 MiB, powered off: %v", res.Took.Round(10*time.Millisecond))
		})
	}
	if got := labtest.SwiftDownloadSHA256(t, c, "guest.raw"); got != sum {
		t.Errorf("guest.raw in Swift after the boots: sha256 %s, want %s", got, sum)
	}
}

// TestLibvirtDirPool: a libvirt dir storage pool on the mount, as an
// operator defines one for images in Swift: pool define/build/start/
// refresh, vol-list and vol-info of an image, a qcow2 overlay created by
// libvirt in a local pool with its backing file on the mount, and domains
// booting the test guest from the overlay and from the pool's image
// (read-only, cache='none'); the guests power off by themselves. What
// libvirt tried that imagefs refused is logged.
func TestLibvirtDirPool(t *testing.T) {
	t.Parallel()
	l := labtest.StartLibvirt(t)
	g := labtest.BuildGuest(t)
	c := labtest.NewContainer(t)
	d := libvirtMount(t, c)
	local, sum := labtest.GuestDisk(t, 32<<20, 132)
	labtest.RunCmd(t, "cp", local, d.Path("guest.raw"))

	virsh := func(args ...string) string {
		t.Helper()
		out, err := l.Virsh(args...)
		if err != nil {
			t.Fatalf("virsh %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	pool := labtest.DomainPrefix + regexp.MustCompile(`[^A-Za-z0-9_-]`).ReplaceAllString(c, "-")
	virsh("pool-define-as", pool, "dir", "--target", d.Dir)
	t.Cleanup(func() {
		_, _ = l.Virsh("pool-destroy", pool)
		if out, err := l.Virsh("pool-undefine", pool); err != nil {
			t.Errorf("virsh pool-undefine %s: %v %s", pool, err, out)
		}
	})
	// pool-build of an existing directory: libvirt makes sure it exists
	// and applies the pool's permissions (none given here).
	if out, err := l.Virsh("pool-build", pool); err != nil {
		t.Logf("virsh pool-build on the mount fails (the pool still starts on the existing directory): %v %s", err, out)
	} else {
		t.Logf("virsh pool-build on the mount: ok")
	}
	virsh("pool-start", pool)
	virsh("pool-refresh", pool)
	if out := virsh("pool-info", pool); !strings.Contains(out, "running") {
		t.Errorf("virsh pool-info %s: not running:\n%s", pool, out)
	}
	vols := virsh("vol-list", pool)
	if !regexp.MustCompile(`(?m)^\s*guest\.raw\s+` + regexp.QuoteMeta(d.Path("guest.raw")) + `\s*$`).MatchString(vols) {
		t.Errorf("virsh vol-list %s does not list guest.raw at %s:\n%s", pool, d.Path("guest.raw"), vols)
	}
	info := virsh("vol-info", "--bytes", "--pool", pool, "guest.raw")
	if !regexp.MustCompile(`Capacity:\s+33554432 bytes`).MatchString(info) || !regexp.MustCompile(`Type:\s+file`).MatchString(info) {
		t.Errorf("virsh vol-info of guest.raw: want a file of capacity 33554432 bytes:\n%s", info)
	}
	if x := virsh("vol-dumpxml", "--pool", pool, "guest.raw"); !strings.Contains(x, "<format type='raw'/>") {
		t.Errorf("virsh vol-dumpxml of guest.raw: want format raw:\n%s", x)
	}

	// The overlay: a local pool, a qcow2 volume whose backing file is the
	// image on the mount (what Nova does with use_cow_images).
	localDir := filepath.Join(t.TempDir(), "local-pool")
	if err := os.Mkdir(localDir, 0o755); err != nil {
		t.Fatal(err)
	}
	labtest.MakeReachable(t, localDir)
	lpool := pool + "-local"
	virsh("pool-create-as", lpool, "dir", "--target", localDir)
	t.Cleanup(func() { _, _ = l.Virsh("pool-destroy", lpool) })
	virsh("vol-create-as", lpool, "overlay.qcow2", "32M", "--format", "qcow2", "--backing-vol", d.Path("guest.raw"), "--backing-vol-format", "raw")
	overlay := filepath.Join(localDir, "overlay.qcow2")
	if out := labtest.RunCmd(t, "qemu-img", "info", "-U", overlay); !strings.Contains(out, "backing file: "+d.Path("guest.raw")) {
		t.Errorf("the overlay's backing file is not the image on the mount:\n%s", out)
	}

	boot := func(what string, disk labtest.Disk) {
		t.Helper()
		start := time.Now()
		dom, err := l.CreateDomain(t, labtest.DomainOpts{Guest: g, MemoryMiB: 128, Disks: []labtest.Disk{disk}})
		if err != nil {
			t.Fatalf("the domain (%s) did not start; libvirt says:\n%v", what, err)
		}
		console, err := dom.WaitPoweredOff(90 * time.Second)
		if err != nil {
			t.Fatalf("%v\nthe guest's console:\n%s", err, console)
		}
		if !strings.Contains(console, "IMAGEFS-GUEST: DISK OK") {
			t.Fatalf("the guest (%s) did not find its disk intact; its console:\n%s\nqemu log:\n%s", what, console, dom.QemuLog())
		}
		t.Logf("domain %s (%s): booted, checked its disk, powered off, %v after virsh create", dom.Name, what, time.Since(start).Round(10*time.Millisecond))
	}
	boot("qcow2 overlay, backing file on the mount", labtest.Disk{Path: overlay, Format: "qcow2",
		Backing: &labtest.Disk{Path: d.Path("guest.raw"), Format: "raw"}})
	boot("the pool's raw image, read-only, cache=none", labtest.Disk{Path: d.Path("guest.raw"), Format: "raw", ReadOnly: true, Cache: "none"})

	virsh("pool-refresh", pool)
	checkImageIntact(t, c, "guest.raw", sum)
	var refused []string
	for _, line := range strings.Split(d.LogText(), "\n") {
		if strings.Contains(line, "refused") || strings.Contains(line, "not supported") {
			refused = append(refused, line)
		}
	}
	t.Logf("what libvirt asked of the mount that imagefs refused (%d log lines):\n%s", len(refused), strings.Join(refused, "\n"))
}

package fs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imagefs/imagefs/fs"
)

// statfs returns size, used and available bytes of the mount, as df
// computes them.
func statfs(t *testing.T, dir string) (size, used, avail int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs: %v", err)
	}
	f := st.Frsize
	return int64(st.Blocks) * f, int64(st.Blocks-st.Bfree) * f, int64(st.Bavail) * f
}

func TestStatfsUsageAndQuota(t *testing.T) {
	e := mountWith(t, mib, func(o *fs.Options, _ *fusefs.Options) { o.UsageTTL = time.Millisecond })
	if err := os.WriteFile(filepath.Join(e.dir, "a"), bytes.Repeat([]byte("x"), 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	size, used, avail := statfs(t, e.dir)
	// 10000 bytes in 4 KiB blocks, and imagefs' own state objects.
	if used < 12288 || used > 64<<10 || size-used != fs.NoQuotaAvail {
		t.Errorf("without a quota: size %d used %d, want used about 10000 bytes and %d free", size, used, int64(fs.NoQuotaAvail))
	}
	if avail != size-used {
		t.Errorf("available %d, want size-used %d", avail, size-used)
	}

	// The smaller quota applies: the account's, then the container's.
	e.st.SetQuota("", 1<<30)
	e.st.SetQuota("c", 1<<40)
	time.Sleep(2 * time.Millisecond)
	if size, _, _ := statfs(t, e.dir); size != 1<<30 {
		t.Errorf("account quota 1GiB, container quota 1TiB: size %d, want 1GiB", size)
	}
	e.st.SetQuota("c", 8<<20)
	time.Sleep(2 * time.Millisecond)
	if size, used2, avail := statfs(t, e.dir); size != 8<<20 || used2 != used || avail != size-used {
		t.Errorf("container quota 8MiB: size %d used %d avail %d, want 8MiB, %d, the rest", size, used2, avail, used)
	}
	// Over quota: full, never more used than the size.
	e.st.SetQuota("", 4096)
	time.Sleep(2 * time.Millisecond)
	if size, used, avail := statfs(t, e.dir); size != 4096 || used != 4096 || avail != 0 {
		t.Errorf("over quota: size %d used %d avail %d, want 4096 4096 0", size, used, avail)
	}
}

// A slow account HEAD does not hold statfs up: the previous figures are
// served while the refresh runs; a failing one keeps them too.
func TestStatfsStaleWhileSlow(t *testing.T) {
	e := mountWith(t, mib, func(o *fs.Options, _ *fusefs.Options) { o.UsageTTL = time.Millisecond })
	e.st.SetQuota("c", 1<<30)
	if size, _, _ := statfs(t, e.dir); size != 1<<30 {
		t.Fatalf("size %d, want the quota 1GiB", size)
	}
	release := make(chan struct{})
	e.st.SetHook(func(op, c, o string) error {
		if op == "HEAD-ACCOUNT" {
			<-release
		}
		return nil
	})
	e.st.SetQuota("c", 2<<30)
	time.Sleep(2 * time.Millisecond)
	for range 3 {
		start := time.Now()
		size, _, _ := statfs(t, e.dir)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("statfs took %v while the account HEAD hangs", d)
		}
		if size != 1<<30 {
			t.Errorf("size %d while the refresh hangs, want the previous 1GiB", size)
		}
	}
	if n := e.st.Calls("HEAD-ACCOUNT"); n != 2 {
		t.Errorf("%d account HEADs, want 2 (the first, then one refresh at a time)", n)
	}
	close(release)
	e.st.SetHook(func(op, c, o string) error {
		if op == "HEAD-ACCOUNT" {
			return errors.New("account server down")
		}
		return nil
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if size, _, _ := statfs(t, e.dir); size == 2<<30 || time.Now().After(deadline) {
			break // the hung refresh came back with the new quota
		}
		time.Sleep(10 * time.Millisecond)
	}
	if size, _, _ := statfs(t, e.dir); size != 2<<30 {
		t.Errorf("size %d after a failed refresh, want the last figures (2GiB)", size)
	}
}

func TestReadOnlyMount(t *testing.T) {
	e := mountWith(t, mib, func(o *fs.Options, _ *fusefs.Options) { o.ReadOnly = true })
	e.put(t, "a", []byte("data"), nil)
	ro := e.dir
	if b, err := os.ReadFile(filepath.Join(ro, "a")); err != nil || string(b) != "data" {
		t.Fatalf("read on the read-only mount: %q, %v", b, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == ro && !strings.HasPrefix(f[5], "ro") {
			t.Errorf("mount options %q, want ro", f[5])
		}
	}
	checks := map[string]func() error{
		"create":   func() error { return os.WriteFile(filepath.Join(ro, "b"), nil, 0o644) },
		"open rw":  func() error { f, err := os.OpenFile(filepath.Join(ro, "a"), os.O_RDWR, 0); f.Close(); return err },
		"truncate": func() error { return os.Truncate(filepath.Join(ro, "a"), 0) },
		"remove":   func() error { return os.Remove(filepath.Join(ro, "a")) },
		"rename":   func() error { return os.Rename(filepath.Join(ro, "a"), filepath.Join(ro, "c")) },
		"mkdir":    func() error { return os.Mkdir(filepath.Join(ro, "d"), 0o755) },
	}
	for name, f := range checks {
		if err := f(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", name, err)
		}
	}
	if got := e.st.Names("c"); len(got) != 1 || got[0] != "a" {
		t.Errorf("objects after the refused changes: %q, want [a]", got)
	}
}

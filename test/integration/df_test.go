//go:build integration

package integration

import (
	"context"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// dfBytes is statfs(2) of dir as df shows it: size, used and available
// bytes.
func dfBytes(t *testing.T, dir string) (size, used, avail int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	f := st.Frsize
	return int64(st.Blocks) * f, int64(st.Blocks-st.Bfree) * f, int64(st.Bavail) * f
}

// roundUp is n in whole 4 KiB blocks, statfs' unit.
func roundUp(n int64) int64 { return (n + 4095) / 4096 * 4096 }

// updateAccount makes Swift's account figures include the containers'
// latest writes. In production the container updater does that within
// minutes; the lab does not run it, but a PUT of an existing container
// makes the container server report its figures to the account at once.
func updateAccount(t *testing.T, containers ...string) {
	t.Helper()
	for _, c := range containers {
		if err := labtest.Swift.CreateContainer(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStatfsFromAccount: df shows the account's bytes used, and a
// container quota as the size.
func TestStatfsFromAccount(t *testing.T) {
	c := labtest.NewContainer(t)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--statfs-ttl", "1s", "--segment-size", "1MiB"}})
	const written = 5<<20 + 777
	src, _ := labtest.RandomFile(t, written, 41)
	labtest.RunCmd(t, "cp", src, d.Path("a.img"))
	updateAccount(t, c, c+"_segments")
	ctx := t.Context()
	if ci, err := labtest.Swift.HeadContainer(ctx, c+"_segments"); err != nil || ci.BytesUsed < written {
		t.Fatalf("the segment container holds %+v (%v), want at least the %d bytes written", ci, err, written)
	}

	// The account is shared with other tests, so its figure moves: poll
	// until one statfs falls between two equal account HEADs.
	var last string
	ok := poll(20*time.Second, func() bool {
		a1, err := labtest.Swift.HeadAccount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		size, used, avail := dfBytes(t, d.Dir)
		a2, err := labtest.Swift.HeadAccount(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		last = "account " + strconv.FormatInt(a1.BytesUsed, 10) + "/" + strconv.FormatInt(a2.BytesUsed, 10) +
			" bytes, df used " + strconv.FormatInt(used, 10) + " size " + strconv.FormatInt(size, 10)
		return a1.BytesUsed == a2.BytesUsed && used == roundUp(a1.BytesUsed) && avail == size-used && a1.QuotaBytes < 0
	})
	if !ok {
		t.Fatalf("df never matched the account's bytes used: %s", last)
	}

	// A container quota, as the swift CLI sets it, is the size.
	const quota = 100 << 30
	if out, err := exec.Command("swift", "post", "-m", "quota-bytes:"+strconv.Itoa(quota), c).CombinedOutput(); err != nil {
		t.Fatalf("swift post: %v: %s", err, out)
	}
	ok = poll(10*time.Second, func() bool {
		size, used, avail := dfBytes(t, d.Dir)
		last = "size " + strconv.FormatInt(size, 10) + " used " + strconv.FormatInt(used, 10) + " avail " + strconv.FormatInt(avail, 10)
		return size == quota && avail == size-used
	})
	if !ok {
		t.Fatalf("with quota-bytes %d: %s", quota, last)
	}
}

// poll calls f until it returns true, for at most d.
func poll(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(300 * time.Millisecond)
	}
}

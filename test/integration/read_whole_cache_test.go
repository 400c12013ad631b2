//go:build integration

package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestReadWholeImagesCachedOnBusyDisk: four images read whole at once,
// while a dd keeps the cache's disk busy, are whole in --cache-dir
// afterwards: a remount reads them all again, at once, with no GET to
// Swift. Nothing was dropped on the way (the daemon logs no slow disk).
func TestReadWholeImagesCachedOnBusyDisk(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	sizes := []int64{64 << 20, 64<<20 + 4097, 96 << 20, 128<<20 - 1}
	names := make([]string, len(sizes))
	pats := make([]labtest.Pattern, len(sizes))
	for i, size := range sizes {
		names[i] = fmt.Sprintf("vm%d.img", i)
		pats[i] = labtest.Pattern{Seed: uint64(130 + i), Size: size}
		labtest.PutSLO(t, c, names[i], pats[i], size, 32<<20)
	}
	base := t.TempDir()
	cacheDir := filepath.Join(base, "cache")
	fp := labtest.NewFaultProxy(t) // counts the GETs
	args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", cacheDir, "--cache-size", "2GiB"}

	readAll := func(d *labtest.Daemon) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, len(names))
		for i := range names {
			wg.Go(func() { errs[i] = checkSHA256(d.Path(names[i]), pats[i].SHA256()) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}

	// The busy disk: dd writes and syncs to the filesystem of the cache
	// directory for as long as the first read lasts.
	ctx, stop := context.WithCancel(t.Context())
	busy := exec.CommandContext(ctx, "sh", "-c",
		`while :; do dd if=/dev/zero of="$1" bs=1M count=256 conv=fsync status=none || exit 1; done`, "sh", filepath.Join(base, "busy"))
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	readAll(d)
	stop()
	if err := busy.Wait(); err == nil || ctx.Err() == nil {
		t.Fatalf("the dd keeping the disk busy ended by itself: %v", err)
	}
	n0, b0 := fp.DataGETs()
	var total int64
	for _, s := range sizes {
		total += s
	}
	if b0 < total {
		t.Fatalf("the first read fetched %d bytes of %d", b0, total)
	}
	d.Stop()
	if log := d.LogText(); strings.Contains(log, "too slow") || strings.Contains(log, "cannot write to the block cache") {
		t.Errorf("blocks were dropped on the busy disk:\n%s", log)
	}

	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	readAll(d)
	if n1, b1 := fp.DataGETs(); n1 != n0 {
		t.Errorf("after a remount, %d GETs (%d bytes) for images read whole before", n1-n0, b1-b0)
	}
}

// checkSHA256 reads a file and compares its SHA-256 (from a goroutine,
// where t.Fatal is not allowed).
func checkSHA256(p, want string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: sha256 %s, want %s", p, got, want)
	}
	return nil
}

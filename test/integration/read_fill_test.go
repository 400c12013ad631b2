//go:build integration

package integration

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestReadFillResumesAfterCrash: an image read from its start goes
// straight into its whole-image file in --cache-dir (sparse while it
// fills, with a .fill log), never into block files. The daemon is killed
// mid-read (SIGKILL); one block of the partial file is then damaged (a
// write that never reached the disk). The next mount serves the blocks
// recorded, refetches the damaged one (logged, never served), fetches the
// rest, seals the file, and a third mount reads the image with 0 GETs.
func TestReadFillResumesAfterCrash(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	const size = 64<<20 + 4097
	img := labtest.Pattern{Seed: 150, Size: size}
	labtest.PutSLO(t, c, "fill.img", img, size, 32<<20)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	fp := labtest.NewFaultProxy(t) // counts the GETs
	args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", cacheDir, "--cache-size", "1GiB", "--boot-traces=false"}
	glob := func(pat string) []string {
		m, _ := filepath.Glob(filepath.Join(cacheDir, pat))
		return m
	}

	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	f, err := os.Open(d.Path("fill.img"))
	if err != nil {
		t.Fatal(err)
	}
	const head = 24 << 20
	if _, err := io.CopyN(io.Discard, f, head); err != nil {
		t.Fatal(err)
	}
	// Wait for the disk writers: the log holds a record per block written.
	logs := glob("whole-v1/*/*.fill")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if len(logs) == 1 {
			if fi, err := os.Stat(logs[0]); err == nil && fi.Size() >= 16*(head>>18) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fill log with %d records in %s after 20 s: %v", head>>18, cacheDir, logs)
		}
		time.Sleep(50 * time.Millisecond)
		logs = glob("whole-v1/*/*.fill")
	}
	d.Kill()
	f.Close()
	li, err := os.Stat(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Blocks recorded: one 16-byte record each after a header of less
	// than 1 KiB (the version key's length varies).
	recorded := max(li.Size()-1024, 0) / 16
	if b := glob("blocks-v1/*/*"); len(b) != 0 {
		t.Errorf("%d block files written for an image read from its start", len(b))
	}
	if s := glob("whole-v1/*/*.seal"); len(s) != 0 {
		t.Fatalf("a partial image is sealed: %v", s)
	}
	data := strings.TrimSuffix(logs[0], ".fill")
	// Block 3's bytes lost, as by a crash before the page cache was written.
	df, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := df.WriteAt(make([]byte, 4096), 3<<18); err != nil {
		t.Fatal(err)
	}
	df.Close()

	n0, b0 := fp.DataGETs()
	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if err := checkSHA256(d.Path("fill.img"), img.SHA256()); err != nil {
		t.Fatal(err)
	}
	n1, b1 := fp.DataGETs()
	// The blocks not recorded and the damaged one; nothing recorded and
	// intact is fetched again.
	if got, most := b1-b0, size-(recorded-1)<<18; got > most || got < 1<<18 {
		t.Errorf("the resumed read fetched %d bytes in %d GETs; want 256 KiB (the damaged block) to %d (%d blocks recorded)", got, n1-n0, most, recorded)
	}
	d.Stop()
	if !strings.Contains(d.LogText(), "discarding a bad block of a partial whole-image cache file") {
		t.Error("the damaged block was not detected")
	}
	if s := glob("whole-v1/*/*.seal"); len(s) != 1 {
		t.Fatalf("the image read whole is not sealed: %v", s)
	}
	if l := glob("whole-v1/*/*.fill"); len(l) != 0 {
		t.Errorf("fill log left after the seal: %v", l)
	}

	d = labtest.Mount(t, c, labtest.MountOpts{Args: args})
	if err := checkSHA256(d.Path("fill.img"), img.SHA256()); err != nil {
		t.Fatal(err)
	}
	if n2, b2 := fp.DataGETs(); n2 != n1 {
		t.Errorf("after the seal and a remount, %d GETs (%d bytes)", n2-n1, b2-b1)
	}
}

//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// lsSizes runs ls -l on dir and returns name -> size as ls shows it.
func lsSizes(t *testing.T, dir string) map[string]string {
	t.Helper()
	out, err := exec.Command("ls", "-l", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -l %s: %v\n%.2000s", dir, err, out)
	}
	sizes := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 9 {
			sizes[f[len(f)-1]] = f[4]
		}
	}
	return sizes
}

// swiftCalls counts what the proxy saw since mark under the directory
// imgs/: object HEADs and GETs, listing GETs.
func swiftCalls(fp *labtest.FaultProxy, mark int) (heads, gets, lists int) {
	for _, q := range fp.Seen()[mark:] {
		switch {
		case q.Method == http.MethodHead && strings.Contains(q.Path, "/imgs/"):
			heads++
		case q.Method == http.MethodGet && strings.Contains(q.Path, "/imgs/"):
			gets++
		case q.Method == http.MethodGet && strings.Contains(q.Query, "prefix=imgs"):
			lists++
		}
	}
	return
}

// TestListLargeDirectory: ls -l of a directory of 1,500 objects (made by
// Swift's bulk extract-archive) costs its listing and one HEAD of each
// zero-byte object only; a DLO manifest there shows its real size (its
// parts hidden), an SLO its total; a second ls -l within --list-ttl sends
// nothing; this mount's own write shows at once; a change made on
// another mount shows within --list-ttl.
func TestListLargeDirectory(t *testing.T) {
	t.Parallel()
	const n = 1500
	c := labtest.NewContainer(t)
	files := make([]labtest.TarFile, n)
	for i := range files {
		files[i] = labtest.TarFile{Name: fmt.Sprintf("imgs/%05d.img", i), Size: 1 + i%1000}
	}
	start := time.Now()
	labtest.ExtractArchive(t, c, files)
	t.Logf("%d objects made by extract-archive in %v", n, time.Since(start))
	// A DLO whose parts sit next to it (manifest "disk", parts
	// "disk-part-N"), and an SLO.
	labtest.PutObject(t, c, "imgs/disk-part-1", bytes.Repeat([]byte("a"), 700000), nil)
	labtest.PutObject(t, c, "imgs/disk-part-2", bytes.Repeat([]byte("b"), 300000), nil)
	if _, err := labtest.Swift.Put(t.Context(), c, "imgs/disk", bytes.NewReader(nil), 0, "",
		segments.PutOptions{DLO: c + "/imgs/disk-part-"}); err != nil {
		t.Fatal(err)
	}
	slo := labtest.Pattern{Seed: 16, Size: 3<<20 + 5}
	labtest.PutSLO(t, c, "imgs/slo.img", slo, slo.Size, 1<<20)

	const ttl = 6 * time.Second
	fp := labtest.NewFaultProxy(t)
	args := []string{"--attr-ttl", "1s", "--list-ttl", ttl.String(), "--os-storage-url", fp.StorageURL}
	d := labtest.Mount(t, c, labtest.MountOpts{Args: args})
	other := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--attr-ttl", "1s"}})
	if _, err := os.Stat(d.Path("imgs")); err != nil {
		t.Fatal(err)
	}

	mark := len(fp.Seen())
	start = time.Now()
	got := lsSizes(t, d.Path("imgs"))
	cold := time.Since(start)
	heads, gets, lists := swiftCalls(fp, mark)
	t.Logf("cold ls -l of %d entries: %v, %d listing pages, %d HEADs, %d GETs", len(got), cold, lists, heads, gets)
	if len(got) != n+2 {
		t.Errorf("ls -l shows %d entries, want %d (the objects, the DLO and the SLO; not the DLO's parts)", len(got), n+2)
	}
	if got["disk"] != "1000000" || got["slo.img"] != fmt.Sprint(slo.Size) || got["00007.img"] != "8" {
		t.Errorf("ls -l sizes: disk %q (want 1000000), slo.img %q (want %d), 00007.img %q (want 8)", got["disk"], got["slo.img"], slo.Size, got["00007.img"])
	}
	if _, ok := got["disk-part-1"]; ok {
		t.Error("ls -l shows a part of the DLO disk")
	}
	// The listing: a first page of 1,000 names, one of the rest, and the
	// empty page that ends it.
	if heads > 1 || gets > 0 || lists < 2 || lists > 3 {
		t.Errorf("cold ls -l sent %d HEADs (want 1: the zero-byte DLO manifest), %d object GETs (want 0), %d listing pages (want 3)", heads, gets, lists)
	}

	mark = len(fp.Seen())
	start = time.Now()
	lsSizes(t, d.Path("imgs"))
	warm := time.Since(start)
	if heads, gets, lists := swiftCalls(fp, mark); heads+gets+lists != 0 {
		t.Errorf("warm ls -l within --list-ttl sent %d HEADs, %d GETs, %d listing pages; want none", heads, gets, lists)
	}
	t.Logf("warm ls -l: %v", warm)

	// This mount's own write: at once.
	if err := os.WriteFile(d.Path("imgs/00001.img"), make([]byte, 4242), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := lsSizes(t, d.Path("imgs")); got["00001.img"] != "4242" {
		t.Errorf("after this mount's write, ls -l shows size %q, want 4242", got["00001.img"])
	}
	// Another host's: within the TTL (the first listing that shows it is
	// at most ttl after the change, plus the time of a listing).
	if err := os.WriteFile(other.Path("imgs/00002.img"), make([]byte, 999), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other.Path("imgs/new.img"), make([]byte, 5), 0o644); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	for {
		got := lsSizes(t, d.Path("imgs"))
		st, err := os.Stat(d.Path("imgs/00002.img"))
		if err != nil {
			t.Fatal(err)
		}
		if got["00002.img"] == "999" && got["new.img"] == "5" && st.Size() == 999 {
			t.Logf("the other mount's changes showed after %v", time.Since(changed))
			break
		}
		if time.Since(changed) > ttl+3*time.Second {
			t.Fatalf("the other mount's changes not shown %v after: 00002.img %q (stat %d), new.img %q",
				time.Since(changed), got["00002.img"], st.Size(), got["new.img"])
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestListKeepsStoredMtime: a large image uploaded by the swift CLI (an
// SLO that stores the file's mtime as X-Object-Meta-Mtime) keeps that
// mtime in stat after ls -l listed it: the listing's ETag of an SLO is
// its manifest's MD5, not the ETag a HEAD gives, and must not make the
// daemon forget what the HEAD told.
func TestListKeepsStoredMtime(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	src, _ := labtest.RandomFile(t, 3<<20+5, 95)
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(src, old, old); err != nil {
		t.Fatal(err)
	}
	labtest.RunCmd(t, "swift", "upload", "--use-slo", "--segment-size", "1048576", "--object-name", "imgs/vm.img", c, src)
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--list-ttl", "5m", "--attr-ttl", "5m"}})
	mtime := func(when string) {
		t.Helper()
		st, err := os.Stat(d.Path("imgs/vm.img"))
		if err != nil {
			t.Fatal(err)
		}
		if !st.ModTime().Equal(old) || st.Size() != 3<<20+5 {
			t.Errorf("%s: mtime %v size %d, want %v (the stored mtime) and %d", when, st.ModTime().UTC(), st.Size(), old, 3<<20+5)
		}
	}
	mtime("stat before any listing")
	if sizes := lsSizes(t, d.Path("imgs")); sizes["vm.img"] != fmt.Sprint(3<<20+5) {
		t.Errorf("ls -l: %v", sizes)
	}
	mtime("stat after ls -l")
	out, err := exec.Command("ls", "-l", "--time-style=+%Y", d.Path("imgs")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 2020 vm.img") {
		t.Errorf("ls -l after a stat shows %q (%v), want the year 2020", out, err)
	}
}

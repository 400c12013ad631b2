//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// glanceImage is one image the real glance_store driver stored.
type glanceImage struct {
	ID        string `json:"id"`
	Container string `json:"container"`
	Size      int64  `json:"size"`
	MD5       string `json:"md5"`
	SHA256    string `json:"sha256"`
}

// putGlanceMultiTenant stores images of the sizes given (a "N:unknown"
// size is sent as unknown: a DLO whatever its size) with Debian's
// glance_store Swift driver in multi-tenant mode (testdata), one container
// <prefix>_<uuid> each, removed when the test ends.
func putGlanceMultiTenant(t *testing.T, prefix string, sizes ...string) []glanceImage {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("/usr/bin/python3", append([]string{"testdata/glance_multitenant.py", prefix}, sizes...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var images []glanceImage
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var im glanceImage
		if err := json.Unmarshal(sc.Bytes(), &im); err != nil {
			t.Fatalf("glance_store driver printed %q: %v", sc.Text(), err)
		}
		images = append(images, im)
		// Reading a DLO holds its version: a lease in <container>_segments.
		t.Cleanup(func() { removeContainerAll(t, im.Container); removeContainerAll(t, im.Container+"_segments") })
	}
	if err != nil || len(images) != len(sizes) {
		t.Fatalf("glance_store driver (python3-glance-store): %v, %d of %d images stored\n%s", err, len(images), len(sizes), stderr.String())
	}
	return images
}

// removeContainerAll deletes a container, if it exists, and everything in
// it.
func removeContainerAll(t *testing.T, c string) {
	if _, err := labtest.Swift.HeadContainer(context.Background(), c); errors.Is(err, segments.ErrNotFound) {
		return
	}
	if out, err := exec.Command("swift", "delete", c).CombinedOutput(); err != nil {
		t.Logf("cleanup of %s: %v: %s", c, err, out)
	}
}

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ls %s: %v", dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestAccountMount: `imagefs mount --account` shows the containers of the
// account as directories, never a segment container; a Glance
// multi-tenant store written by the real glance_store driver (one
// container per image, small images plain, large ones and those of
// unknown size DLOs) is browsable as one tree and every image reads back
// with glance_store's checksum. A file written inside a container through
// the account mount commits and reads back from a mount of that container
// alone (a second host), which sees the account mount's lease of the
// version it holds open; a commit from that host is seen by the account
// mount; a container created later appears; the top refuses mkdir and
// rmdir (EPERM), and nothing of it reaches Swift.
func TestAccountMount(t *testing.T) {
	t.Parallel()
	c1 := labtest.NewContainer(t)
	c2 := labtest.NewContainer(t)
	if err := labtest.Swift.CreateContainer(t.Context(), c2+"_segments"); err != nil {
		t.Fatal(err)
	}
	labtest.PutObject(t, c2, "dir/notes.txt", []byte("in c2"), nil)
	prefix := fmt.Sprintf("it-glance%d", time.Now().UnixNano())
	const chunk = 1_024_000 // the script's swift_store_large_object_chunk_size: 1 "MB"
	images := putGlanceMultiTenant(t, prefix, "300000", fmt.Sprint(2*chunk+4567), fmt.Sprintf("%d:unknown", chunk+99))

	acct := labtest.Mount(t, "", labtest.MountOpts{Args: []string{"--account", "--segment-size", "1MiB"}})
	top := readDirNames(t, acct.Dir)
	for _, want := range []string{c1, c2} {
		if !slices.Contains(top, want) {
			t.Errorf("ls of the account lacks %s", want)
		}
	}
	for _, n := range top {
		if strings.HasSuffix(n, "_segments") {
			t.Errorf("ls of the account shows the segment container %s", n)
		}
	}
	if _, err := os.Stat(acct.Path(c2 + "_segments")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a segment container: %v, want ENOENT", err)
	}
	if got, err := os.ReadFile(acct.Path(c2 + "/dir/notes.txt")); err != nil || string(got) != "in c2" {
		t.Errorf("read %s/dir/notes.txt: %q, %v", c2, got, err)
	}

	// The Glance store: one directory per image, the image alone in it.
	var glance []string
	for _, n := range top {
		if strings.HasPrefix(n, prefix+"_") {
			glance = append(glance, n)
		}
	}
	if len(glance) != len(images) {
		t.Errorf("ls of the account shows %d containers of the Glance store, want %d: %q", len(glance), len(images), glance)
	}
	for _, im := range images {
		dir := acct.Path(im.Container)
		if got := readDirNames(t, dir); !slices.Equal(got, []string{im.ID}) {
			t.Errorf("ls %s = %q, want only the image (its DLO segments hidden)", im.Container, got)
		}
		p := filepath.Join(dir, im.ID)
		if st, err := os.Stat(p); err != nil || st.Size() != im.Size {
			t.Errorf("stat of image %s: %v, %v; want %d bytes", im.ID, st, err, im.Size)
		}
		if got := labtest.SHA256File(t, p); got != im.SHA256 {
			t.Errorf("image %s (%d bytes) reads with sha256 %s, glance_store recorded %s", im.ID, im.Size, got, im.SHA256)
		}
	}

	// A write inside a container commits as in a container mount...
	src, sum := labtest.RandomFile(t, 3<<20+777, 12)
	labtest.RunCmd(t, "cp", src, acct.Path(c1+"/disk.img"))
	if n := len(labtest.SegmentNames(t, c1)); n < 3 {
		t.Errorf("%s_segments holds %d segments after a 3 MiB write, want 3 or more", c1, n)
	}
	if slices.Contains(readDirNames(t, acct.Dir), c1+"_segments") {
		t.Errorf("ls of the account shows %s_segments, made by the write", c1)
	}
	// ... and reads back from a mount of that container (another host).
	host2 := labtest.Mount(t, c1, labtest.MountOpts{Args: []string{"--segment-size", "1MiB"}})
	if got := labtest.SHA256File(t, host2.Path("disk.img")); got != sum {
		t.Errorf("the container mount reads disk.img with sha256 %s, written %s", got, sum)
	}
	// The account mount holds what it has open with its own lease in that
	// container's segment container (named as a mount of c1 alone at the
	// account's mountpoint would name it).
	f, err := os.Open(acct.Path(c1 + "/disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	lease := labtest.StatePrefix + "leases/" + leaseHost(t, c1, acct.Dir)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(labtest.StateNames(t, c1), lease) {
		if time.Now().After(deadline) {
			t.Fatalf("no lease %s in %s_segments while the account mount has disk.img open: %q", lease, c1, labtest.StateNames(t, c1))
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.Close()

	// A commit on the other host is seen by the account mount within the
	// attribute TTL (1 s).
	src2, sum2 := labtest.RandomFile(t, 2<<20+5, 13)
	labtest.RunCmd(t, "cp", src2, host2.Path("disk.img"))
	time.Sleep(1500 * time.Millisecond)
	if got := labtest.SHA256File(t, acct.Path(c1+"/disk.img")); got != sum2 {
		t.Errorf("the account mount reads disk.img with sha256 %s after the other host's commit of %s", got, sum2)
	}

	// A container created now shows up.
	c3 := labtest.NewContainer(t)
	if !slices.Contains(readDirNames(t, acct.Dir), c3) {
		t.Errorf("ls of the account lacks %s, created after the mount", c3)
	}

	// The top holds containers only.
	newName := fmt.Sprintf("it-account-mkdir-%d", time.Now().UnixNano())
	if err := os.Mkdir(acct.Path(newName), 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir at the top: %v, want EPERM", err)
	}
	if _, err := labtest.Swift.HeadContainer(context.Background(), newName); !errors.Is(err, segments.ErrNotFound) {
		removeContainerAll(t, newName)
		t.Errorf("container %s after a refused mkdir: %v, want none", newName, err)
	}
	if err := os.Remove(acct.Path(c3)); !errors.Is(err, syscall.EPERM) {
		t.Errorf("rmdir of a container: %v, want EPERM", err)
	}
	if _, err := labtest.Swift.HeadContainer(context.Background(), c3); err != nil {
		t.Errorf("container %s after a refused rmdir: %v", c3, err)
	}
	if !strings.Contains(acct.LogText(), "mkdir refused") {
		t.Errorf("no log line for the refused mkdir")
	}

	// Shutdown gives up the account mount's leases in every container.
	acct.Stop()
	host2.Stop()
	if left := labtest.StateNames(t, c1); slices.ContainsFunc(left, func(n string) bool { return strings.HasPrefix(n, labtest.StatePrefix+"leases/") }) {
		t.Errorf("leases left in %s_segments after both mounts stopped: %q", c1, left)
	}
}

// leaseHost is the host id of a mount of container c at mountpoint dir:
// the host name and a hash of what is mounted where (cmd/imagefs hostID,
// as segments.Versions stores it).
func leaseHost(t *testing.T, c, dir string) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(c + "\x00" + "" + "\x00" + dir))
	return strings.NewReplacer("/", "_", "-", "_").Replace(h + "." + hex.EncodeToString(sum[:3]))
}

// TestAccountBadInput: --account takes the mountpoint alone; a container
// argument with it is a usage error (status 2) that says so.
func TestAccountBadInput(t *testing.T) {
	t.Parallel()
	labtest.MountFails(t, nil, []string{"--account", "somecontainer", t.TempDir()}, 2, "mount --account needs only MOUNTPOINT")
}

package labtest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// GlanceStore drives the real glance_store Swift driver (Debian's
// python3-glance-store, which test/run.sh installs) through
// glancestore.py, configured as a Glance API server configures it.
type GlanceStore struct {
	// Multi selects a multi-tenant store (swift_store_multi_tenant: image
	// <id> in container <Container>_<id> of the user's account), else a
	// single-tenant one (every image in Container, through the
	// swift_store_config_file reference "ref").
	Multi     bool
	Container string // swift_store_container
	// ChunkMB: images from this size on are DLOs of chunks of this size,
	// in glance_store's MB (1,024,000 bytes); default 1.
	ChunkMB int
}

// GlanceImage is what glance_store reports of an image it stored (add) or
// read (get). Checksum is the MD5, OSHashValue the SHA-512, in hex.
type GlanceImage struct {
	Location    string `json:"location"`
	Size        int64  `json:"size"`     // add: bytes stored; get: the size get reported
	Read        int64  `json:"read"`     // get: bytes read
	GetSize     int64  `json:"get_size"` // get: get_size
	Checksum    string `json:"checksum"`
	OSHashValue string `json:"os_hash_value"`
}

// NewImageID returns a random image id in Glance's form (a UUID v4).
func NewImageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Location is the location URL of image id in this store, as Glance
// records it: swift+config://ref/<container>/<id> (single tenant), or
// swift+http://<storage URL>/<container>_<id>/<id> (multi-tenant).
func (g GlanceStore) Location(id string) string {
	if !g.Multi {
		return "swift+config://ref/" + g.Container + "/" + id
	}
	return "swift+" + Keeper.Current().StorageURL + "/" + g.ImageContainer(id) + "/" + id
}

// ImageContainer is the container that holds image id.
func (g GlanceStore) ImageContainer(id string) string {
	if !g.Multi {
		return g.Container
	}
	return g.Container + "_" + id
}

// CreateImageContainer creates the container of image id (for imagefs to
// write the image into) and removes it with everything in it and in its
// segment container when the test ends; a multi-tenant store's per-image
// containers that glance_store creates need the same cleanup.
func (g GlanceStore) CreateImageContainer(t testing.TB, id string) string {
	t.Helper()
	c := g.ImageContainer(id)
	if err := Swift.CreateContainer(t.Context(), c); err != nil {
		t.Fatalf("create container %s: %v", c, err)
	}
	g.CleanupImageContainer(t, id)
	return c
}

// CleanupImageContainer removes the container of image id and its segment
// container when the test ends.
func (g GlanceStore) CleanupImageContainer(t testing.TB, id string) {
	c := g.ImageContainer(id)
	t.Cleanup(func() { removeContainer(t, c); removeContainer(t, c+"_segments") })
}

// Add stores file as image id with glance_store's add, as Glance's image
// upload does (hashing algorithm sha512).
func (g GlanceStore) Add(t testing.TB, id, file string) GlanceImage {
	t.Helper()
	return g.run(t, "add", id, file)
}

// Get reads the image at location url whole with glance_store's get and
// get_size, as Glance's image download does, and digests the bytes.
func (g GlanceStore) Get(t testing.TB, url string) GlanceImage {
	t.Helper()
	return g.run(t, "get", url)
}

// Delete deletes the image at location url with glance_store's delete, as
// Glance's image delete does.
func (g GlanceStore) Delete(t testing.TB, url string) {
	t.Helper()
	g.run(t, "delete", url)
}

func (g GlanceStore) run(t testing.TB, op string, args ...string) GlanceImage {
	t.Helper()
	if missing := missingPackages([]string{"python3-glance-store"}); len(missing) > 0 {
		t.Fatal("the Glance interop tests need Debian's python3-glance-store (test/run.sh installs it): apt-get install --no-install-recommends python3-glance-store")
	}
	mode := "single"
	if g.Multi {
		mode = "multi"
	}
	chunk := g.ChunkMB
	if chunk == 0 {
		chunk = 1
	}
	argv := append([]string{filepath.Join(root, "test/labtest/glancestore.py"), "--mode", mode,
		"--container", g.Container, "--chunk-mb", strconv.Itoa(chunk), op}, args...)
	// Debian's python (the one with glance_store), not one earlier on PATH.
	cmd := exec.Command("/usr/bin/python3", argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("glance_store %s %s (%s): %v\n%s", op, strings.Join(args, " "), mode, err, tail(stderr.String(), 3000))
	}
	var img GlanceImage
	if err := json.Unmarshal(out, &img); err != nil {
		t.Fatalf("glance_store %s: its answer %q: %v", op, out, err)
	}
	return img
}

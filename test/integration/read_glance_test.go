//go:build integration

package integration

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestReadGlanceDLO: an image stored the way Glance stores large images
// (a DLO whose segments <uuid>-00001... sit next to the manifest, all
// written with plain PUTs) shows as one file of the right size, without
// its segments, and reads back identically straight from the segments.
func TestReadGlanceDLO(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	const uuid = "6d0a3b3e-1f7c-4c5e-9a53-0d2f4bfe1a2b"
	const segSize = 3_000_017 // Glance's default is 204,800,000; readers must not assume it
	p := labtest.Pattern{Seed: 70, Size: 5*segSize + 12345}
	labtest.PutGlanceDLO(t, c, uuid, p, p.Size, segSize)
	labtest.PutObject(t, c, "notes.txt", []byte("not an image"), nil)
	labtest.PutObject(t, c, "empty.img", nil, nil) // zero bytes, but no DLO
	fp := labtest.NewFaultProxy(t)                 // to see which objects are read
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", fp.StorageURL}})

	ents, err := os.ReadDir(d.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if got, want := strings.Join(names, " "), "6d0a3b3e-1f7c-4c5e-9a53-0d2f4bfe1a2b empty.img notes.txt"; got != want {
		t.Errorf("ls = %q, want %q (segments hidden)", got, want)
	}
	st, err := os.Stat(d.Path(uuid))
	if err != nil || st.Size() != p.Size {
		t.Fatalf("stat of the image: %v, %v; want %d bytes", st, err, p.Size)
	}
	// A segment is hidden from lookups too: writing to it (or creating
	// another name under the prefix) would change the image.
	if _, err := os.Stat(d.Path(uuid + "-00002")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a segment: %v, want ENOENT", err)
	}
	if got := labtest.SHA256File(t, d.Path(uuid)); got != p.SHA256() {
		t.Errorf("sha256 through the mount %s, want %s", got, p.SHA256())
	}
	f := labtest.OpenDirect(t, d.Path(uuid))
	for k := int64(1); k <= 5; k++ { // across each segment boundary
		off := k*segSize - 70000
		buf := make([]byte, 150000)
		n, err := f.ReadAt(buf, off)
		if (err != nil && err != io.EOF) || !bytes.Equal(buf[:n], p.Bytes(off, 150000)) {
			t.Errorf("read across boundary %d: %d, %v", k, n, err)
		}
	}
	for _, q := range fp.Seen() {
		if q.Method == "GET" && strings.HasSuffix(q.Path, "/"+uuid) && q.Query == "" {
			t.Errorf("read through the DLO manifest (%s %s): segments should be read directly", q.Method, q.Path)
		}
	}
}

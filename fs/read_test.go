package fs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefs/imagefs/segments"
)

// TestReadGlanceLayout: a DLO with its segments next to the manifest
// (Glance) lists as one file and reads back; the segments are hidden,
// other zero-byte files are not.
func TestReadGlanceLayout(t *testing.T) {
	e := mount(t, mib)
	const uuid = "0b6e4a3c-5d2f-4e8a-9b1c-2d3e4f5a6b7c"
	data := randBytes(5*mib+333, 40)
	var segs int
	for off := 0; off < len(data); off += 2*mib + 7 {
		segs++
		e.put(t, fmt.Sprintf("%s-%05d", uuid, segs), data[off:min(off+2*mib+7, len(data))], nil)
	}
	if _, err := e.st.Put(context.Background(), "c", uuid, bytes.NewReader(nil), 0, "", segments.PutOptions{DLO: "c/" + uuid + "-"}); err != nil {
		t.Fatal(err)
	}
	e.put(t, "empty.img", nil, nil)
	e.put(t, "dir/other-00001", []byte("x"), nil) // same suffix shape, elsewhere: shown

	ents, err := os.ReadDir(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	sort.Strings(names)
	if got, want := strings.Join(names, " "), uuid+" dir empty.img"; got != want {
		t.Errorf("ls = %q, want %q", got, want)
	}
	got, err := os.ReadFile(e.dir + "/" + uuid)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read of the DLO: %d bytes, %v", len(got), err)
	}
	if e.st.Calls("GET") < segs {
		t.Errorf("%d GETs for %d segments: not read from the segments", e.st.Calls("GET"), segs)
	}
}

// TestNoGraftOntoImage: a name under a Glance image's DLO prefix cannot be
// created, made a directory or renamed onto (EPERM), so the image keeps
// its size and content; its parts are hidden from lookups as well as
// listings; a Glance part whose manifest does not exist yet (an upload in
// progress) is hidden by its shape; imagefs' reserved name is refused.
func TestNoGraftOntoImage(t *testing.T) {
	e := mount(t, mib)
	const uuid = "0b6e4a3c-5d2f-4e8a-9b1c-2d3e4f5a6b7c"
	const uploading = "1c7f5b4d-6e3a-4f9b-8c2d-3e4f5a6b7c8d"
	data := randBytes(3*mib, 41)
	e.put(t, uuid+"-00001", data[:2*mib], nil)
	e.put(t, uuid+"-00002", data[2*mib:], nil)
	if _, err := e.st.Put(context.Background(), "c", uuid, bytes.NewReader(nil), 0, "", segments.PutOptions{DLO: "c/" + uuid + "-"}); err != nil {
		t.Fatal(err)
	}
	e.put(t, uploading+"-00001", []byte("half an upload"), nil)
	e.put(t, "other.img", []byte("x"), nil)

	for _, name := range []string{uuid + "-notes.txt", uuid + "-00003", uploading + "-00002", ".imagefs"} {
		err := os.WriteFile(e.dir+"/"+name, []byte("graft"), 0o644)
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("create %s: %v, want EPERM", name, err)
		}
	}
	if err := os.Mkdir(e.dir+"/"+uuid+"-dir", 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir under the prefix: %v, want EPERM", err)
	}
	if err := os.Rename(e.dir+"/other.img", e.dir+"/"+uuid+"-moved"); !errors.Is(err, syscall.EPERM) {
		t.Errorf("rename onto the prefix: %v, want EPERM", err)
	}
	for _, name := range []string{uuid + "-00001", uploading + "-00001"} {
		if _, err := os.Stat(e.dir + "/" + name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat of the part %s: %v, want ENOENT", name, err)
		}
	}
	ents, err := os.ReadDir(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	if got, want := strings.Join(names, " "), uuid+" other.img"; got != want {
		t.Errorf("ls = %q, want %q", got, want)
	}
	got, err := os.ReadFile(e.dir + "/" + uuid)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the image after the attempts: %d bytes, %v", len(got), err)
	}
	if n := strings.Join(e.st.Names("c"), " "); n != strings.Join([]string{uuid, uuid + "-00001", uuid + "-00002", uploading + "-00001", "other.img"}, " ") {
		t.Errorf("container: %s", n)
	}
}

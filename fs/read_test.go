package fs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
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

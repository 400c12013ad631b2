package fs_test

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

// TestWarm: a warm puts the whole file in the disk cache (a read after it
// makes no GET), at the rate asked for; a second warm fetches nothing;
// bad paths and a mount without a cache directory get clear errors.
func TestWarm(t *testing.T) {
	requireFUSE(t)
	st := segmentstest.New()
	for _, c := range []string{"c", "c_segments"} {
		if err := st.CreateContainer(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	gets := &getCounter{n: map[string]int{}}
	st.SetHook(gets.hook)
	data := randBytes(16*mib+3, 5)
	if _, err := st.Put(t.Context(), "c", "dir/img", strings.NewReader(string(data)), int64(len(data)), "", segments.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	dir, root := mountHostDir(t, st, false, t.TempDir())
	var reports int
	start := time.Now()
	p, err := root.Warm(t.Context(), "dir/img", fs.WarmOptions{Rate: 8 * mib, Progress: func(fs.WarmProgress) { reports++ }})
	if err != nil || p.Done != int64(len(data)) || p.Fetched != int64(len(data)) || reports < 2 {
		t.Fatalf("warm: %+v, %v, %d reports", p, err, reports)
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("16MiB at 8MiB/s took %v", el)
	}
	if p, err := root.Warm(t.Context(), "/dir/img", fs.WarmOptions{}); err != nil || p.Fetched != 0 || p.Done != p.Size {
		t.Errorf("second warm: %+v, %v", p, err)
	}
	before := gets.count("dir/img")
	f, err := os.Open(dir + "/dir/img")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(got) != string(data) {
		t.Fatalf("read after warm: %d bytes, %v", len(got), err)
	}
	if n := gets.count("dir/img") - before; n != 0 {
		t.Errorf("read after warm made %d GETs, want 0", n)
	}
	for rel, want := range map[string]string{"missing": "no such file", "": "is a directory", "dir": "no such file"} {
		if _, err := root.Warm(t.Context(), rel, fs.WarmOptions{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("warm %q: %v, want %q", rel, err, want)
		}
	}
	_, memOnly := mountHost(t, st, false)
	if _, err := memOnly.Warm(t.Context(), "dir/img", fs.WarmOptions{}); err == nil || !strings.Contains(err.Error(), "--cache-dir") {
		t.Errorf("warm without a cache directory: %v", err)
	}
}

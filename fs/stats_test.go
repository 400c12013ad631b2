package fs_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefs/imagefs/fs"
)

// TestUploadStateAndStats: while a file is open for writing, its
// user.imagefs.upload attribute and Root.UploadList show the upload; once
// closed (committed) the attribute is gone. The counters and the latency
// recorder saw the writes, the commit and the reads.
func TestUploadStateAndStats(t *testing.T) {
	e := mount(t, mib)
	p := filepath.Join(e.dir, "f.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(3*mib+100, 5)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := syscall.Getxattr(p, fs.XattrUpload, buf)
	if err != nil {
		t.Fatalf("getxattr %s while writing: %v", fs.XattrUpload, err)
	}
	v := string(buf[:n])
	if !regexp.MustCompile(`^state=writing written=3145828 uploaded=\d+ segments_in_flight=\d+ segments_queued=\d+ segments_done=\d+$`).MatchString(v) {
		t.Errorf("%s = %q", fs.XattrUpload, v)
	}
	n, err = syscall.Listxattr(p, buf)
	if err != nil || !strings.Contains(string(buf[:n]), fs.XattrUpload+"\x00") {
		t.Errorf("listxattr while writing: %q %v", buf[:n], err)
	}
	ups := e.root.UploadList()
	if len(ups) != 1 || ups[0].Path != "f.img" || ups[0].Written != int64(len(data)) || ups[0].State != "writing" {
		t.Errorf("uploads: %+v", ups)
	}
	if err := syscall.Setxattr(p, fs.XattrUpload, []byte("x"), 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("setxattr %s: %v, want EPERM", fs.XattrUpload, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Getxattr(p, fs.XattrUpload, buf); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr %s of a committed file: %v, want ENODATA", fs.XattrUpload, err)
	}
	if ups := e.root.UploadList(); len(ups) != 0 {
		t.Errorf("uploads after close: %+v", ups)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != string(data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	st := e.root.Stats()
	if st.WrittenBytes != int64(len(data)) || st.ReadBytes < int64(len(data)) || st.Commits != 1 || st.CommitFailures != 0 {
		t.Errorf("stats: %+v", st)
	}
	for _, op := range []string{"create", "write", "flush", "read", "getxattr"} {
		if e.lat.count(op) == 0 {
			t.Errorf("no %s request was recorded", op)
		}
	}
}

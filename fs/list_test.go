package fs_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/segments"
)

// lsl runs ls -l on dir and returns name -> size.
func lsl(t *testing.T, dir string) map[string]string {
	t.Helper()
	sizes, _ := lslTimes(t, dir)
	return sizes
}

// lslTimes runs ls -l on dir and returns name -> size and name -> mtime
// (Unix seconds).
func lslTimes(t *testing.T, dir string) (map[string]string, map[string]string) {
	t.Helper()
	out, err := exec.Command("ls", "-l", "--time-style=+%s", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -l %s: %v\n%s", dir, err, out)
	}
	sizes, times := map[string]string{}, map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 7 {
			sizes[f[6]], times[f[6]] = f[4], f[5]
		}
	}
	return sizes, times
}

// TestListAttributesFromListing: ls -l of a directory costs its listing
// and a HEAD of each zero-byte object (a DLO manifest shows its real
// size, its parts are hidden); a second ls -l within the listing TTL
// costs nothing; this mount's own write shows at once, another host's
// after the TTL.
func TestListAttributesFromListing(t *testing.T) {
	const ttl = 2 * time.Second
	e := mountWith(t, mib, func(o *fs.Options, mo *fusefs.Options) { o.AttrTTL, o.ListTTL = time.Second, ttl })
	const n = 1500
	for i := range n {
		e.put(t, fmt.Sprintf("imgs/%05d.img", i), make([]byte, i), nil)
	}
	ctx := context.Background()
	if _, err := e.st.Put(ctx, "c", "imgs/disk", bytes.NewReader(nil), 0, "", segments.PutOptions{DLO: "c/imgs/disk-part-"}); err != nil {
		t.Fatal(err)
	}
	e.put(t, "imgs/disk-part-1", make([]byte, 700), nil)
	e.put(t, "imgs/disk-part-2", make([]byte, 300), nil)
	e.put(t, "imgs/sub/x.img", []byte("x"), nil)
	// Stored mtimes (as the swift CLI writes them): known to ls -l for a
	// file HEADed before (same version), the listing's time otherwise.
	e.put(t, "imgs/stat.img", []byte("s"), map[string]string{"mtime": "1600000000.5"})
	e.put(t, "imgs/unseen.img", []byte("u"), map[string]string{"mtime": "1600000000.5"})
	if st, err := os.Stat(filepath.Join(e.dir, "imgs/stat.img")); err != nil || st.ModTime().Unix() != 1600000000 {
		t.Fatalf("stat of stat.img: %v, %v", st, err)
	}

	if _, err := os.Stat(filepath.Join(e.dir, "imgs")); err != nil {
		t.Fatal(err)
	}
	heads, lists := e.st.Calls("HEAD"), e.st.Calls("LIST")
	got, times := lslTimes(t, filepath.Join(e.dir, "imgs"))
	if len(got) != n+4 { // the files, the DLO, sub, stat.img, unseen.img
		t.Fatalf("ls -l shows %d entries, want %d", len(got), n+4)
	}
	if times["stat.img"] != "1600000000" || times["unseen.img"] == "1600000000" {
		t.Errorf("ls -l times: stat.img %s (want its stored 1600000000), unseen.img %s (want the listing's)", times["stat.img"], times["unseen.img"])
	}
	if got["disk"] != "1000" || got["00007.img"] != "7" || got["disk-part-1"] != "" {
		t.Errorf("ls -l: disk %q (want 1000), 00007.img %q (want 7), disk-part-1 %q (want hidden)", got["disk"], got["00007.img"], got["disk-part-1"])
	}
	// Zero-byte objects: 00000.img and the DLO manifest.
	if h := e.st.Calls("HEAD") - heads; h > 2 {
		t.Errorf("ls -l of %d objects sent %d HEADs, want at most 2 (the zero-byte objects)", n, h)
	}
	if l := e.st.Calls("LIST") - lists; l < 1 || l > 2 {
		t.Errorf("ls -l sent %d listings, want 1", l)
	}

	heads, lists = e.st.Calls("HEAD"), e.st.Calls("LIST")
	lsl(t, filepath.Join(e.dir, "imgs"))
	if h, l := e.st.Calls("HEAD")-heads, e.st.Calls("LIST")-lists; h+l != 0 {
		t.Errorf("a second ls -l within the TTL sent %d HEADs and %d listings, want none", h, l)
	}

	// Own write: at once.
	if err := os.WriteFile(filepath.Join(e.dir, "imgs/00001.img"), make([]byte, 4242), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := lsl(t, filepath.Join(e.dir, "imgs")); got["00001.img"] != "4242" {
		t.Errorf("after this mount's write ls -l shows size %q, want 4242", got["00001.img"])
	}
	// Another host's write: within the TTL.
	e.put(t, "imgs/00002.img", make([]byte, 999), nil)
	e.put(t, "imgs/new.img", make([]byte, 5), nil)
	deadline := time.Now().Add(ttl + time.Second)
	for {
		got := lsl(t, filepath.Join(e.dir, "imgs"))
		if got["00002.img"] == "999" && got["new.img"] == "5" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("another host's changes not shown %v after: 00002.img %q new.img %q", ttl+time.Second, got["00002.img"], got["new.img"])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pausedList holds a listing after its first page until release is
// closed: a directory of several pages whose last has not arrived.
type pausedList struct {
	segments.ObjectStore
	release chan struct{}
}

func (p *pausedList) List(ctx context.Context, c, prefix string, delim rune, fn func(segments.Info) error) error {
	n := 0
	return p.ObjectStore.List(ctx, c, prefix, delim, func(in segments.Info) error {
		if n++; n == 10001 && strings.HasPrefix(prefix, "big/") {
			select {
			case <-p.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return fn(in)
	})
}

// TestListStreams: readdir returns the first entries of a large
// directory while its later pages have not arrived, and all of them once
// they have.
func TestListStreams(t *testing.T) {
	p := &pausedList{release: make(chan struct{})}
	e := mountContainer(t, mib, func(co *segments.ContainerOptions) {
		p.ObjectStore = co.Store
		co.Store = p
	}, func(o *fs.Options, mo *fusefs.Options) { o.AttrTTL = time.Second })
	const n = 25000
	for i := range n {
		e.put(t, fmt.Sprintf("big/%06d", i), []byte("x"), nil)
	}
	d, err := os.Open(filepath.Join(e.dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	first := make(chan error, 1)
	var names []string
	go func() {
		var err error
		names, err = d.Readdirnames(10)
		first <- err
	}()
	select {
	case err := <-first:
		if err != nil || len(names) != 10 || names[0] != "000000" {
			t.Fatalf("first entries: %v, %v", names, err)
		}
	case <-time.After(10 * time.Second):
		close(p.release)
		t.Fatal("readdir returned nothing while the listing's later pages had not arrived")
	}
	close(p.release)
	rest, err := d.Readdirnames(-1)
	if err != nil || len(rest) != n-10 {
		t.Fatalf("the rest: %d names, %v; want %d", len(rest), err, n-10)
	}
	seen := map[string]bool{}
	for _, name := range append(names, rest...) {
		if seen[name] {
			t.Fatalf("%s listed twice", name)
		}
		seen[name] = true
	}
}

// A reader may go back to an entry it saw (telldir/seekdir, or the kernel
// when its cached copy of the directory is dropped while a reader is part
// way through it): the listing starts again and skips to that entry.
func TestListSeekToEntry(t *testing.T) {
	e := mountContainer(t, mib, nil, func(o *fs.Options, mo *fusefs.Options) { o.AttrTTL = 0 })
	const n = 300
	for i := range n {
		e.put(t, fmt.Sprintf("d/%04d", i), []byte("x"), nil)
	}
	fd, err := syscall.Open(filepath.Join(e.dir, "d"), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	// dirents reads one getdents64 buffer: names and each entry's d_off.
	type dirent struct {
		name string
		off  int64
	}
	dirents := func() []dirent {
		t.Helper()
		buf := make([]byte, 2048) // a few dozen entries
		nb, err := syscall.ReadDirent(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		var out []dirent
		for b := buf[:nb]; len(b) > 0; {
			reclen := int(binary.LittleEndian.Uint16(b[16:18]))
			name := string(bytes.TrimRight(b[19:reclen], "\x00"))
			if name != "." && name != ".." {
				out = append(out, dirent{name, int64(binary.LittleEndian.Uint64(b[8:16]))})
			}
			b = b[reclen:]
		}
		return out
	}
	first := dirents()
	second := dirents()
	if len(first) < 3 || len(second) == 0 {
		t.Fatalf("short reads: %d and %d entries", len(first), len(second))
	}
	// Back to the middle of the first batch: the reader goes on from the
	// entry after it.
	mid := len(first) / 2
	if _, err := syscall.Seek(fd, first[mid].off, 0); err != nil {
		t.Fatal(err)
	}
	again := dirents()
	if len(again) == 0 || again[0].name != first[mid+1].name {
		t.Fatalf("after seeking to %q (offset %d): next %v, want %q", first[mid].name, first[mid].off, again[:min(len(again), 3)], first[mid+1].name)
	}
	// And the rest of the directory follows, each name once.
	seen := map[string]bool{}
	for _, d := range first[:mid+1] {
		seen[d.name] = true
	}
	for batch := again; len(batch) > 0; batch = dirents() {
		for _, d := range batch {
			if seen[d.name] {
				t.Fatalf("%s listed twice", d.name)
			}
			seen[d.name] = true
		}
	}
	if len(seen) != n {
		t.Errorf("%d names in all, want %d", len(seen), n)
	}
}

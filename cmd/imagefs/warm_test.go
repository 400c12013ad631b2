package main

import (
	"strings"
	"testing"
)

func TestMountOf(t *testing.T) {
	mounts := map[string]string{"/": "ext4", "/var/lib/images": "fuse.imagefs", "/var/lib/images/x": "tmpfs", "/var/lib/imagesplus": "xfs"}
	for abs, want := range map[string]string{
		"/var/lib/images/a.img":         "/var/lib/images fuse.imagefs",
		"/var/lib/images":               "/var/lib/images fuse.imagefs",
		"/var/lib/images/x/y":           "/var/lib/images/x tmpfs",
		"/var/lib/imagesplus/a.img":     "/var/lib/imagesplus xfs",
		"/etc/passwd":                   "/ ext4",
		"/var/lib/images/dir/sub/b.raw": "/var/lib/images fuse.imagefs",
	} {
		mp, fstype := mountOf(abs, mounts)
		if got := mp + " " + fstype; got != want {
			t.Errorf("mountOf(%s) = %s, want %s", abs, got, want)
		}
	}
	if rel := relTo("/var/lib/images", "/var/lib/images/dir/b.raw"); rel != "dir/b.raw" {
		t.Errorf("relTo = %q", rel)
	}
}

func TestProgressText(t *testing.T) {
	got := progressText("a.img", warmLine{Size: 1 << 30, Done: 256 << 20, Fetched: 256 << 20, Elapsed: 2})
	for _, want := range []string{"256.0MiB of 1.0GiB cached (25%)", "128.0MiB/s", "ETA 6s"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q does not say %q", got, want)
		}
	}
}

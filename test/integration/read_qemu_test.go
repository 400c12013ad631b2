//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestReadQemuImages: qemu-img info, check, compare and convert of a raw
// image (an SLO with odd segments) and a qcow2 image stored in the mount,
// buffered and with O_DIRECT (-T none, as qemu cache=none opens images).
func TestReadQemuImages(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	qcow := filepath.Join(dir, "disk.qcow2")
	labtest.RunCmd(t, "qemu-img", "create", "-q", "-f", "raw", raw, "96M")
	// Data in places, holes elsewhere, like a real disk.
	f, err := os.OpenFile(raw, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := labtest.Pattern{Seed: 100, Size: 96 << 20}
	for _, r := range [][2]int64{{0, 3 << 20}, {17<<20 + 4096, 9 << 20}, {60 << 20, 1 << 20}, {95 << 20, 1 << 20}} {
		if _, err := f.WriteAt(p.Bytes(r[0], r[1]), r[0]); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	labtest.RunCmd(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow)
	rawSum := labtest.SHA256File(t, raw)

	rf, _ := os.Open(raw)
	defer rf.Close()
	labtest.PutSLO(t, c, "disk.raw", rf, 96<<20, 16<<20+12345)
	qf, _ := os.Open(qcow)
	defer qf.Close()
	st, _ := qf.Stat()
	labtest.PutPlain(t, c, "disk.qcow2", qf, st.Size())

	d := labtest.Mount(t, c, labtest.MountOpts{})
	mraw, mqcow := d.Path("disk.raw"), d.Path("disk.qcow2")

	if out := labtest.RunCmd(t, "qemu-img", "info", "--output=json", mqcow); !strings.Contains(out, `"format": "qcow2"`) ||
		!strings.Contains(out, `"virtual-size": 100663296`) {
		t.Errorf("qemu-img info of the qcow2 image:\n%s", out)
	}
	if out := labtest.RunCmd(t, "qemu-img", "info", "--output=json", mraw); !strings.Contains(out, `"format": "raw"`) {
		t.Errorf("qemu-img info of the raw image:\n%s", out)
	}
	if out := labtest.RunCmd(t, "qemu-img", "check", mqcow); !strings.Contains(out, "No errors were found") {
		t.Errorf("qemu-img check:\n%s", out)
	}
	for _, cache := range []string{"writeback", "none"} {
		if out := labtest.RunCmd(t, "qemu-img", "compare", "-T", cache, mraw, mqcow); !strings.Contains(out, "Images are identical") {
			t.Errorf("qemu-img compare -T %s:\n%s", cache, out)
		}
		out := filepath.Join(dir, "out-"+cache+".raw")
		labtest.RunCmd(t, "qemu-img", "convert", "-T", cache, "-f", "qcow2", "-O", "raw", mqcow, out)
		if got := labtest.SHA256File(t, out); got != rawSum {
			t.Errorf("qemu-img convert -T %s of the qcow2 image: sha256 %s, want %s", cache, got, rawSum)
		}
	}
	back := filepath.Join(dir, "back.qcow2")
	labtest.RunCmd(t, "qemu-img", "convert", "-T", "none", "-f", "raw", "-O", "qcow2", mraw, back)
	if out := labtest.RunCmd(t, "qemu-img", "compare", back, raw); !strings.Contains(out, "Images are identical") {
		t.Errorf("qemu-img convert of the raw image:\n%s", out)
	}
}

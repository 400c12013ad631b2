package segments

import (
	"strings"
	"testing"
	"time"
)

// FuzzUploadOf: the upload prefix of a segment name is a prefix of it
// that ends at a slash (or the whole name, if it has none); a start time
// comes only from an upload id, and an id NewUploadID made is found again
// with its time, whatever surrounds it.
func FuzzUploadOf(f *testing.F) {
	for _, n := range []string{"vm.img/20261201T223444Z-0123456789ab/00000001", "a/b/20261201T223444Z-0123456789ab/z/00000001",
		"glance/vm.img-00001", "noslash", "/", "", "x/20261399T999999Z-0123456789ab/1", "x/20261201T223444Z-0123456789AB/1",
		"20261201T223444Z-0123456789ab", "20261201T223444Z-0123456789ab/"} {
		f.Add(n, "dir/vm.img", int64(1764628484), "00000007")
	}
	f.Fuzz(func(t *testing.T, name, path string, unix int64, rest string) {
		prefix, started := uploadOf(name)
		if !strings.HasPrefix(name, prefix) {
			t.Fatalf("%q: prefix %q is not a prefix", name, prefix)
		}
		i := strings.LastIndexByte(name, '/')
		switch {
		case i < 0:
			if prefix != name || !started.IsZero() {
				t.Fatalf("%q (no slash): %q, %v", name, prefix, started)
			}
		case !strings.HasSuffix(prefix, "/"):
			t.Fatalf("%q: prefix %q does not end at a slash", name, prefix)
		}
		if !started.IsZero() {
			id := prefix[strings.LastIndexByte(prefix[:len(prefix)-1], '/')+1 : len(prefix)-1]
			if !uploadIDRe.MatchString(id) || started.Format("20060102T150405Z") != id[:16] {
				t.Fatalf("%q: started %v from %q", name, started, id)
			}
		} else if i >= 0 && prefix != name[:i+1] {
			t.Fatalf("%q: no upload id, prefix %q, want %q", name, prefix, name[:i+1])
		}

		// An id of NewUploadID, below any path, above any name without
		// another id.
		if unix < 0 || unix > 253402300799 || strings.Contains(rest, "/") || uploadIDRe.MatchString(rest) {
			return
		}
		when := time.Unix(unix, 0).UTC()
		id := NewUploadID(when)
		seg := id + "/" + rest
		if path != "" {
			seg = path + "/" + seg
		}
		p, s := uploadOf(seg)
		if p != strings.TrimSuffix(seg, rest) || !s.Equal(when) {
			t.Fatalf("%q: %q, %v; want %q, %v", seg, p, s, strings.TrimSuffix(seg, rest), when)
		}
	})
}

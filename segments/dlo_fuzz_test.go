package segments

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDLOManifest: an X-Object-Manifest value that parses names a
// container (no slash in it) and a prefix within Swift's limits, in valid
// UTF-8; a container and prefix written as Swift clients write them
// (escaped or not) parse back to themselves.
func FuzzDLOManifest(f *testing.F) {
	for _, v := range []string{"images_segments/vm.img/1700000000.000000/", "c/", "c", "", "/p", "c%2Fd/p", "c/p%20q", "c/p%zz", "%00/x", "c/\xff",
		"glance_segments/9b1c0e1a-3f0c-4a39-a6b4-6f3c2f4c8a6e-", strings.Repeat("a", 257) + "/p"} {
		f.Add(v, "images", "vm.img/")
	}
	f.Fuzz(func(t *testing.T, v, container, prefix string) {
		c, p, err := parseDLOManifest(v)
		if err == nil {
			if c == "" || strings.Contains(c, "/") || len(c) > maxContainerName || len(p) > maxObjectName ||
				!utf8.ValidString(c+p) || strings.ContainsRune(c+p, 0) {
				t.Fatalf("%q: container %q, prefix %q", v, c, p)
			}
			if !strings.Contains(v, "%") && v != c+"/"+p {
				t.Fatalf("%q without escapes: container %q, prefix %q", v, c, p)
			}
		}
		if container == "" || strings.Contains(container, "/") || len(container) > maxContainerName || len(prefix) > maxObjectName ||
			!validName(container) || !validName(prefix) {
			return
		}
		for _, w := range []string{url.PathEscape(container) + "/" + escapePath(prefix), url.QueryEscape(container) + "/" + url.QueryEscape(prefix)} {
			if strings.Contains(w, "+") {
				continue // QueryEscape's spaces: not what Swift reads
			}
			c, p, err := parseDLOManifest(w)
			if err != nil || c != container || p != prefix {
				t.Fatalf("%q (from %q, %q): %q, %q, %v", w, container, prefix, c, p, err)
			}
		}
		if !strings.Contains(container+prefix, "%") {
			if c, p, err := parseDLOManifest(container + "/" + prefix); err != nil || c != container || p != prefix {
				t.Fatalf("%q/%q unescaped: %q, %q, %v", container, prefix, c, p, err)
			}
		}
	})
}

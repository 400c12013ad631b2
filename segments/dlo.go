package segments

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Swift's limits on names (constraints.py): a container name has at most
// 256 bytes, an object name at most 1024.
const (
	maxContainerName = 256
	maxObjectName    = 1024
)

// parseDLOManifest splits the value of an X-Object-Manifest header,
// "container/prefix", into the container and the object prefix of a DLO's
// segments. Like Swift, it decodes %XX escapes first (an escape that is
// not one is kept as it is, as Python's unquote does) and splits at the
// first slash; the prefix may be empty (the whole container). It refuses
// what Swift cannot have stored: no slash, no container, names longer than
// Swift allows, invalid UTF-8 or NUL.
func parseDLOManifest(v string) (container, prefix string, err error) {
	if v == "" {
		return "", "", errors.New("X-Object-Manifest is empty")
	}
	u := unquote(v)
	c, p, ok := strings.Cut(u, "/")
	switch {
	case !ok:
		return "", "", fmt.Errorf("X-Object-Manifest %s is not container/prefix", clip(v))
	case c == "":
		return "", "", fmt.Errorf("X-Object-Manifest %s names no container", clip(v))
	case len(c) > maxContainerName:
		return "", "", fmt.Errorf("X-Object-Manifest %s: the container name is longer than %d bytes", clip(v), maxContainerName)
	case len(p) > maxObjectName:
		return "", "", fmt.Errorf("X-Object-Manifest %s: the prefix is longer than %d bytes", clip(v), maxObjectName)
	case !validName(u):
		return "", "", fmt.Errorf("X-Object-Manifest %s is not valid UTF-8 or holds a NUL", clip(v))
	}
	return c, p, nil
}

// DLOTarget returns the container and prefix of the parts of the DLO
// manifest in (ok false if in is not one, or its X-Object-Manifest is not
// usable).
func DLOTarget(in Info) (container, prefix string, ok bool) {
	if in.DLO == "" {
		return "", "", false
	}
	c, p, err := parseDLOManifest(in.DLO)
	return c, p, err == nil
}

// validName reports whether s may be (part of) a Swift name: valid UTF-8
// without NUL, as Swift's proxy demands of every path.
func validName(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// unquote decodes the %XX escapes of s and keeps anything else, invalid
// escapes included, as it is (Python's urllib.parse.unquote, which Swift
// uses; url.PathUnescape would refuse the whole value instead).
func unquote(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if hi, ok := unhex(s[i+1]); ok {
				if lo, ok := unhex(s[i+2]); ok {
					b.WriteByte(hi<<4 | lo)
					i += 2
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// clip quotes s for a message, cut to a length a log line can carry.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

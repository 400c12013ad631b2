package main

import (
	"fmt"
	"strings"
	"testing"
)

// escapeMount escapes a path as the kernel does in /proc/self/mountinfo
// (seq_path with " \t\n\\": octal escapes).
func escapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// FuzzUnescapeMount: unescaping never grows a string and leaves one
// without backslashes alone; any mountpoint, as the kernel writes it in a
// mountinfo line, comes back whole from fields and unescapeMount (the way
// isMountpoint finds its mount).
func FuzzUnescapeMount(f *testing.F) {
	for _, s := range []string{"/var/lib/images", `/tmp/with\040space`, `/a\134b`, `\`, `\0`, `\04`, `\400`, `\777x`, `\\040`, "/x\r", "/no\u00a0break", "/tab\there", "/new\nline"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u := unescapeMount(s)
		if len(u) > len(s) {
			t.Fatalf("%q unescaped to the longer %q", s, u)
		}
		if !strings.Contains(s, `\`) && u != s {
			t.Fatalf("%q without escapes became %q", s, u)
		}
		if e := escapeMount(s); unescapeMount(e) != s {
			t.Fatalf("%q escaped %q unescaped %q", s, e, unescapeMount(e))
		}
		if strings.ContainsAny(s, "\n") || s == "" {
			return // not a path: lines hold no newline, escaped or not
		}
		line := "36 35 0:42 / " + escapeMount(s) + " rw,nosuid,nodev,relatime shared:1 - fuse imagefs:c rw,user_id=0,group_id=0"
		f := fields(line)
		if len(f) <= 4 || unescapeMount(f[4]) != s {
			t.Fatalf("mountpoint %q: line %q gave fields %q", s, line, f)
		}
	})
}

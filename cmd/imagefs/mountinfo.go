package main

import (
	"strconv"
	"strings"
)

func splitLines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

// fields splits a line of /proc/self/mountinfo into its fields. The kernel
// separates them with one space and escapes only space, tab, newline and
// backslash in paths: strings.Fields would also split a mountpoint at a
// carriage return or a no-break space.
func fields(s string) []string { return strings.Split(s, " ") }

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

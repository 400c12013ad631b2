//go:build integration

package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestReadFlagsBadInput: wrong read settings fail before mounting with
// a message that names the flag.
func TestReadFlagsBadInput(t *testing.T) {
	c := labtest.NewContainer(t)
	flagsRejected(t, c, []flagCase{
		{func(string) []string { return []string{"--read-memory", "1KiB"} }, "--read-memory 1KiB: must be between 16MiB"},
		{func(string) []string { return []string{"--read-ahead", "lots"} }, `--read-ahead: "lots" is not a size`},
		{func(string) []string { return []string{"--read-memory", "64MiB", "--read-ahead", "64MiB"} }, "must be at most half of --read-memory"},
		{func(string) []string { return []string{"--cache-size", "1MiB"} }, "--cache-size 1MiB: must be between 64MiB"},
		{func(mnt string) []string { return []string{"--cache-dir", filepath.Join(mnt, "cache")} }, "is inside the mountpoint"},
		{func(string) []string { return []string{"--read-stall-timeout", "10ms"} }, "--read-stall-timeout 10ms: must be at least 1s"},
	})
}

// flagCase is a mount flag mistake: the flags (given the mountpoint) and
// what stderr must say.
type flagCase struct {
	args func(mnt string) []string
	want string
}

// flagsRejected runs `imagefs mount` with each case's flags on container c:
// each must fail before mounting, saying what it wants, without a stack.
func flagsRejected(t *testing.T, c string, cases []flagCase) {
	t.Helper()
	for _, tc := range cases {
		mnt := t.TempDir()
		r := labtest.Exec(t, append(append([]string{"mount"}, tc.args(mnt)...), c, mnt)...)
		if r.Code == 0 || !strings.Contains(r.Stderr, tc.want) || strings.Contains(r.Stderr, "goroutine") {
			t.Errorf("%v: exit %d, stderr %q; want %q", tc.args(mnt), r.Code, r.Stderr, tc.want)
		}
		if labtest.Mounted(mnt) {
			t.Errorf("%v: mounted anyway", tc.args(mnt))
		}
	}
}

package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// parseMount parses args (and the environment) with the flags of
// `imagefs mount`, and nothing else.
func parseMount(t *testing.T, args ...string) *Config {
	t.Helper()
	var c Config
	app := &cli.App{Name: "imagefs", Flags: mountFlags(&c), ExitErrHandler: func(*cli.Context, error) {},
		Action: func(*cli.Context) error { return nil }}
	if err := app.Run(append([]string{"imagefs"}, args...)); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return &c
}

// settingProblems runs `imagefs mount ARGS c DIR` and returns the lines
// of its error about settings (those naming a flag: the credentials are
// not set), and its exit status.
func settingProblems(t *testing.T, args ...string) ([]string, int) {
	t.Helper()
	err := newApp().Run(append(append([]string{"imagefs", "mount"}, args...), "c", t.TempDir()))
	if err == nil {
		t.Fatalf("%v: mounted without credentials", args)
	}
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if strings.HasPrefix(l, "--") {
			lines = append(lines, l)
		}
	}
	return lines, reportTo(err)
}

// TestSettingTypes: Set parses once; String is the text as written; a
// text that does not parse keeps its error and a zero value.
func TestSettingTypes(t *testing.T) {
	for _, tc := range []struct {
		in    string
		bytes int64
		err   string
	}{
		{"32MiB", 32 << 20, ""},
		{" 32 mib ", 32 << 20, ""},
		{"0", 0, ""},
		{"9223372036854775807", 1<<63 - 1, ""},
		{"", 0, `"" is not a size (examples: 32MiB, 1G, 1048576)`},
		{"1.5G", 0, `"1.5G" is not a size (examples: 32MiB, 1G, 1048576)`},
		{"8388608TiB", 0, `"8388608TiB" is too large (at most 9223372036854775807 bytes, just under 8EiB)`},
	} {
		s := sizeOf(tc.in)
		if s.Bytes() != tc.bytes || s.String() != tc.in || errText(s.Err()) != tc.err {
			t.Errorf("sizeOf(%q) = %d, %q, %v; want %d, %q, %q", tc.in, s.Bytes(), s.String(), s.Err(), tc.bytes, tc.in, tc.err)
		}
	}
	s := sizeOf("lots")
	if err := s.Set("1G"); err != nil || s.Bytes() != 1<<30 || s.Err() != nil || s.String() != "1G" {
		t.Errorf("Set(1G) after a bad size: %d, %v, %q, %v", s.Bytes(), s.Err(), s, err)
	}
	if err := s.Set("x"); err != nil || s.Bytes() != 0 || s.Err() == nil {
		t.Errorf("Set(x): %v returned, %d, %v", err, s.Bytes(), s.Err())
	}

	for _, tc := range []struct {
		in   string
		bits uint32
		err  string
	}{
		{"0644", 0o644, ""},
		{"644", 0o644, ""},
		{" 0750 ", 0o750, ""},
		{"0", 0, ""},
		{"0777", 0o777, ""},
		{"1777", 0, `"1777": want permission bits in octal, at most 0777 (e.g. 0644)`},
		{"0999", 0, `"0999": want permission bits in octal, at most 0777 (e.g. 0644)`},
		{"rw-r--r--", 0, `"rw-r--r--": want permission bits in octal, at most 0777 (e.g. 0644)`},
		{"", 0, `"": want permission bits in octal, at most 0777 (e.g. 0644)`},
	} {
		m := modeOf(tc.in)
		if m.Bits() != tc.bits || m.String() != tc.in || errText(m.Err()) != tc.err {
			t.Errorf("modeOf(%q) = %o, %q, %v; want %o, %q, %q", tc.in, m.Bits(), m.String(), m.Err(), tc.bits, tc.in, tc.err)
		}
	}

	for _, tc := range []struct {
		in  string
		lvl slog.Level
		err string
	}{
		{"debug", slog.LevelDebug, ""},
		{"INFO", slog.LevelInfo, ""},
		{"warn", slog.LevelWarn, ""},
		{"error", slog.LevelError, ""},
		{"loud", slog.LevelInfo, `--log-level "loud": want debug, info, warn or error`},
		{"", slog.LevelInfo, `--log-level "": want debug, info, warn or error`},
	} {
		l := levelOf(tc.in)
		if l.Level() != tc.lvl || l.String() != tc.in || errText(l.Err()) != tc.err {
			t.Errorf("levelOf(%q) = %v, %q, %v; want %v, %q, %q", tc.in, l.Level(), l.String(), l.Err(), tc.lvl, tc.in, tc.err)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sizeWant is what the Size s of --flag should be: its text and bytes.
type sizeWant struct {
	flag string
	s    Size
	text string
	n    int64
}

func checkSizes(t *testing.T, want []sizeWant) {
	t.Helper()
	for _, w := range want {
		if w.s.String() != w.text || w.s.Bytes() != w.n || w.s.Err() != nil {
			t.Errorf("--%s: %q, %d, %v; want %q, %d", w.flag, w.s, w.s.Bytes(), w.s.Err(), w.text, w.n)
		}
	}
}

// TestSettingDefaults: without flags or variables, every setting has its
// default, parsed.
func TestSettingDefaults(t *testing.T) {
	c := parseMount(t)
	checkSizes(t, []sizeWant{
		{"segment-size", c.Write.SegmentSize, "32MiB", 32 << 20},
		{"staging-size", c.Write.StagingSize, "32GiB", 32 << 30},
		{"cache-size", c.Read.CacheSize, "10GiB", 10 << 30},
		{"read-memory", c.Read.Memory, "256MiB", 256 << 20},
		{"read-ahead", c.Read.ReadAhead, "64MiB", 64 << 20},
		{"kernel-read-ahead", c.Read.KernelReadAhead, "16MiB", 16 << 20},
	})
	if f, d := c.Files.modes(); f != 0o644 || d != 0o755 || c.Files.FileMode.String() != "0644" || c.Files.DirMode.String() != "0755" {
		t.Errorf("modes %o %o (%s %s), want 0644 0755", f, d, c.Files.FileMode, c.Files.DirMode)
	}
	if c.LogLevel.Level() != slog.LevelInfo || c.LogLevel.String() != "info" {
		t.Errorf("--log-level %v (%q), want info", c.LogLevel.Level(), c.LogLevel)
	}
	if lines, _ := settingProblems(t); len(lines) != 0 {
		t.Errorf("the defaults have problems: %q", lines)
	}
	if !c.Read.Passthrough || c.Read.passthrough() {
		t.Errorf("--passthrough %v, in effect %v; want on, in effect only with --cache-dir", c.Read.Passthrough, c.Read.passthrough())
	}
}

// TestSettingPassthrough: passthrough is on with --cache-dir, unless
// --passthrough=false or IMAGEFS_PASSTHROUGH=false turns it off.
func TestSettingPassthrough(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want bool
	}{
		{"", []string{"--cache-dir", "/var/cache/imagefs"}, true},
		{"", []string{"--cache-dir", "/var/cache/imagefs", "--passthrough=false"}, false},
		{"false", []string{"--cache-dir", "/var/cache/imagefs"}, false},
		{"false", []string{"--cache-dir", "/var/cache/imagefs", "--passthrough"}, true},
		{"", []string{"--passthrough"}, false}, // no cache to pass through
	} {
		t.Run(strings.Join(append([]string{tc.env}, tc.args...), " "), func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("IMAGEFS_PASSTHROUGH", tc.env)
			}
			if got := parseMount(t, tc.args...).Read.passthrough(); got != tc.want {
				t.Errorf("IMAGEFS_PASSTHROUGH=%q %q: passthrough %v, want %v", tc.env, tc.args, got, tc.want)
			}
		})
	}
}

// TestSettingSources: a variable sets a setting, a flag beats it.
func TestSettingSources(t *testing.T) {
	t.Setenv("IMAGEFS_SEGMENT_SIZE", "64MiB")
	t.Setenv("IMAGEFS_STAGING_SIZE", "lots") // the flag replaces it
	t.Setenv("IMAGEFS_READ_MEMORY", "1G")
	t.Setenv("IMAGEFS_FILE_MODE", "640")
	t.Setenv("IMAGEFS_DIR_MODE", "0750")
	t.Setenv("IMAGEFS_LOG_LEVEL", "debug")
	c := parseMount(t, "--staging-size", "1T", "--read-memory", "512MiB", "--dir-mode", "0700")
	checkSizes(t, []sizeWant{
		{"segment-size", c.Write.SegmentSize, "64MiB", 64 << 20},
		{"staging-size", c.Write.StagingSize, "1T", 1 << 40},
		{"read-memory", c.Read.Memory, "512MiB", 512 << 20},
		{"read-ahead", c.Read.ReadAhead, "64MiB", 64 << 20},
	})
	if f, d := c.Files.modes(); f != 0o640 || d != 0o700 {
		t.Errorf("modes %o %o, want 0640 0700", f, d)
	}
	if c.LogLevel.Level() != slog.LevelDebug {
		t.Errorf("log level %v, want debug", c.LogLevel.Level())
	}
}

// TestSettingEmptyVariable: an empty variable is an empty value (an error,
// as when these were string flags), not the default; a flag replaces it.
func TestSettingEmptyVariable(t *testing.T) {
	for _, tc := range []struct{ env, flag, good, want string }{
		{"IMAGEFS_SEGMENT_SIZE", "--segment-size", "8MiB", `--segment-size: "" is not a size (examples: 32MiB, 1G, 1048576)`},
		{"IMAGEFS_KERNEL_READ_AHEAD", "--kernel-read-ahead", "0", `--kernel-read-ahead: "" is not a size (examples: 32MiB, 1G, 1048576)`},
		{"IMAGEFS_FILE_MODE", "--file-mode", "0600", `--file-mode "": want permission bits in octal, at most 0777 (e.g. 0644)`},
		{"IMAGEFS_LOG_LEVEL", "--log-level", "warn", `--log-level "": want debug, info, warn or error`},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, "")
			if lines, code := settingProblems(t); len(lines) != 1 || lines[0] != tc.want || code != 1 {
				t.Errorf("%s= gives %q (exit status %d), want %q (1)", tc.env, lines, code, tc.want)
			}
			if lines, _ := settingProblems(t, tc.flag, tc.good); len(lines) != 0 {
				t.Errorf("%s= and %s %s give %q", tc.env, tc.flag, tc.good, lines)
			}
		})
	}
}

// TestSettingProblems: every message of the settings' checks, each with
// exit status 1 (not a usage error), and all of them at once.
func TestSettingProblems(t *testing.T) {
	const (
		notSize  = ` is not a size (examples: 32MiB, 1G, 1048576)`
		tooLarge = ` is too large (at most 9223372036854775807 bytes, just under 8EiB)`
		notMode  = `: want permission bits in octal, at most 0777 (e.g. 0644)`
	)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--segment-size", "12 parsecs"}, `--segment-size: "12 parsecs"` + notSize},
		{[]string{"--segment-size", "17179869185G"}, `--segment-size: "17179869185G"` + tooLarge},
		{[]string{"--segment-size", "512KiB"}, `--segment-size 512KiB: must be between 1MiB and 5GiB`},
		{[]string{"--segment-size", "5121M"}, `--segment-size 5121M: must be between 1MiB and 5GiB`},
		{[]string{"--staging-size", "much"}, `--staging-size: "much"` + notSize},
		{[]string{"--staging-size", "8388608TiB"}, `--staging-size: "8388608TiB"` + tooLarge},
		{[]string{"--staging-size", "1MiB"}, `--staging-size 1MiB: must be at least 64MiB`},
		{[]string{"--cache-size", "1MiB"}, `--cache-size 1MiB: must be between 64MiB and 1PiB`},
		{[]string{"--cache-size", "9223372036854775808"}, `--cache-size: "9223372036854775808"` + tooLarge},
		{[]string{"--read-memory", "1KiB"}, `--read-memory 1KiB: must be between 16MiB and 1TiB`},
		{[]string{"--read-memory", "-1"}, `--read-memory: "-1"` + notSize},
		{[]string{"--read-ahead", "lots"}, `--read-ahead: "lots"` + notSize},
		{[]string{"--read-ahead", "512K"}, `--read-ahead 512K: must be between 1MiB and 1TiB`},
		{[]string{"--read-memory", "64MiB", "--read-ahead", "64MiB"}, `--read-ahead 64MiB: must be at most half of --read-memory (64MiB)`},
		{[]string{"--kernel-read-ahead", "64K"}, `--kernel-read-ahead 64K: must be 0 or between 128KiB and 1GiB`},
		{[]string{"--kernel-read-ahead", "2G"}, `--kernel-read-ahead 2G: must be 0 or between 128KiB and 1GiB`},
		{[]string{"--kernel-read-ahead", "17179869185G"}, `--kernel-read-ahead: "17179869185G"` + tooLarge},
		{[]string{"--file-mode", "0999"}, `--file-mode "0999"` + notMode},
		{[]string{"--dir-mode", "rwx"}, `--dir-mode "rwx"` + notMode},
		{[]string{"--dir-mode", "0644"}, `--dir-mode 0644: the owner needs the x bit to enter directories`},
		{[]string{"--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
	} {
		if lines, code := settingProblems(t, tc.args...); len(lines) != 1 || lines[0] != tc.want || code != 1 {
			t.Errorf("%q gives %q (exit status %d), want %q (1)", tc.args, lines, code, tc.want)
		}
	}

	// One bad value of each, reported together in Validate's order.
	lines, code := settingProblems(t, "--segment-size", "512KiB", "--staging-size", "much", "--cache-size", "1MiB",
		"--read-memory", "-1", "--read-ahead", "512K", "--kernel-read-ahead", "64K",
		"--file-mode", "0999", "--dir-mode", "0644", "--log-level", "loud")
	want := []string{
		`--segment-size 512KiB: must be between 1MiB and 5GiB`,
		`--staging-size: "much"` + notSize,
		`--cache-size 1MiB: must be between 64MiB and 1PiB`,
		`--read-memory: "-1"` + notSize,
		`--read-ahead 512K: must be between 1MiB and 1TiB`,
		`--kernel-read-ahead 64K: must be 0 or between 128KiB and 1GiB`,
		`--file-mode "0999"` + notMode,
		`--dir-mode 0644: the owner needs the x bit to enter directories`,
		`--log-level "loud": want debug, info, warn or error`,
	}
	if got := strings.Join(lines, "\n"); got != strings.Join(want, "\n") || code != 1 {
		t.Errorf("all at once: exit status %d\n%s\nwant\n%s", code, got, strings.Join(want, "\n"))
	}
}

// TestSettingHelp: help shows each typed setting's default (its String),
// not the value of the environment, and no secret's.
func TestSettingHelp(t *testing.T) {
	t.Setenv("IMAGEFS_SEGMENT_SIZE", "48MiB")
	t.Setenv("IMAGEFS_LOG_LEVEL", "error")
	t.Setenv("OS_PASSWORD", "not-shown")
	for _, tc := range []struct {
		cmd  []string
		want []string
	}{
		{[]string{"mount"}, []string{
			"(default: 32MiB) [$IMAGEFS_SEGMENT_SIZE]",
			"(default: 32GiB) [$IMAGEFS_STAGING_SIZE]",
			"(default: 10GiB) [$IMAGEFS_CACHE_SIZE]",
			"(default: 256MiB) [$IMAGEFS_READ_MEMORY]",
			"(default: 64MiB) [$IMAGEFS_READ_AHEAD]",
			"(default: 16MiB) [$IMAGEFS_KERNEL_READ_AHEAD]",
			"(default: 0644) [$IMAGEFS_FILE_MODE]",
			"(default: 0755) [$IMAGEFS_DIR_MODE]",
			"debug, info, warn or error (default: info) [$IMAGEFS_LOG_LEVEL]",
		}},
		{[]string{"gc"}, []string{"the report to stdout) (default: warn) [$IMAGEFS_LOG_LEVEL]"}},
	} {
		app := newApp()
		var out bytes.Buffer
		app.Writer = &out
		if err := app.Run(append(append([]string{"imagefs"}, tc.cmd...), "--help")); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("imagefs %s --help does not say %q:\n%s", tc.cmd[0], w, out.String())
			}
		}
		if strings.Contains(out.String(), "not-shown") || strings.Contains(out.String(), "48MiB") || strings.Contains(out.String(), "default: error") {
			t.Errorf("imagefs %s --help shows the environment's values:\n%s", tc.cmd[0], out.String())
		}
	}
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Typed settings. A Size, a Mode or a Level is the value of its flag
// (cli.Generic): it is parsed once, when it is set (its default, its
// environment variable, then the flag), and keeps the text as written for
// the messages and the log. A text that does not parse is kept with its
// error, which Validate reports together with every other problem (exit
// status 1, every problem at once); Set itself never fails, as a failing
// Set would stop the parsing at the first bad flag, as a usage error.

// setting is what the typed settings share: the parsed value, the text,
// and the parse error.
type setting[T any] struct {
	v    T
	text string
	err  error
}

// String is the value as written (help prints it as the default).
func (s setting[T]) String() string { return s.text }

// Err is the parse error of the text, nil if it parsed.
func (s setting[T]) Err() error { return s.err }

func (s *setting[T]) set(text string, parse func(string) (T, error)) error {
	s.text = text
	s.v, s.err = parse(text)
	return nil
}

// Size is a byte count written with an optional unit (32MiB, 1G, 1048576).
type Size struct{ setting[int64] }

func (s *Size) Set(text string) error { return s.set(text, parseSize) }

// Bytes is the size; 0 if it did not parse.
func (s Size) Bytes() int64 { return s.v }

// sizeOf is the Size written text.
func sizeOf(text string) (s Size) { s.Set(text); return s }

// Mode is permission bits written in octal (0644, 644).
type Mode struct{ setting[uint32] }

func (m *Mode) Set(text string) error { return m.set(text, parseMode) }

// Bits are the permission bits; 0 if they did not parse.
func (m Mode) Bits() uint32 { return m.v }

// modeOf is the Mode written text.
func modeOf(text string) (m Mode) { m.Set(text); return m }

// Level is a log level: debug, info, warn or error.
type Level struct{ setting[slog.Level] }

func (l *Level) Set(text string) error { return l.set(text, parseLevel) }

// Level is the log level; info if it did not parse.
func (l Level) Level() slog.Level { return l.v }

// levelOf is the Level written text.
func levelOf(text string) (l Level) { l.Set(text); return l }

// settingFlag is the flag of a typed setting: a cli.GenericFlag that,
// like the string flags these settings were, also hands an empty
// environment variable (IMAGEFS_SEGMENT_SIZE=) to Set: an empty size is
// an error, not the default (a GenericFlag ignores it).
type settingFlag struct{ cli.GenericFlag }

// newSettingFlag is the flag --name (environment variable env) of the
// setting dst, which starts at def.
func newSettingFlag(cat, name, env, def string, dst cli.Generic, usage string) cli.Flag {
	dst.Set(def) // never fails: Validate reports a default that does not parse
	return &settingFlag{cli.GenericFlag{Name: name, EnvVars: []string{env}, Value: dst, Category: cat, Usage: usage}}
}

func (f *settingFlag) Apply(set *flag.FlagSet) error {
	if err := f.GenericFlag.Apply(set); err != nil {
		return err
	}
	for _, env := range f.EnvVars { // the first one set counts, as in Apply
		if v, ok := os.LookupEnv(strings.TrimSpace(env)); ok {
			if v == "" {
				f.HasBeenSet = true
				return f.Value.Set("")
			}
			break
		}
	}
	return nil
}

// parseSize reads a byte count with an optional unit (K, M, G, T; KiB...;
// powers of 1024). Counts that do not fit in an int64 are an error.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	up := strings.ToUpper(t)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"TIB", 1 << 40}, {"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10},
		{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(up, u.suffix) {
			mult = u.m
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if (errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(t, "-")) || (err == nil && n > math.MaxInt64/mult) {
		return 0, fmt.Errorf("%q is too large (at most 9223372036854775807 bytes, just under 8EiB)", s)
	}
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 32MiB, 1G, 1048576)", s)
	}
	return n * mult, nil
}

// parseMode reads permission bits in octal (0644, 644).
func parseMode(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 8, 32)
	if err != nil || n > 0o777 {
		return 0, fmt.Errorf("%q: want permission bits in octal, at most 0777 (e.g. 0644)", s)
	}
	return uint32(n), nil
}

// parseLevel reads a log level; its error names the flag, --log-level.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// problems collects what Validate reports; a nil error is no problem.
type problems []error

func (p *problems) add(errs ...error) {
	for _, err := range errs {
		if err != nil {
			*p = append(*p, err)
		}
	}
}

// checkSize is the problem of the size s of --flag, if any: its parse
// error, or (!ok) that it is not what the setting allows (want says what).
func checkSize(flag string, s Size, ok bool, want string) error {
	switch {
	case s.Err() != nil:
		return fmt.Errorf("--%s: %w", flag, s.Err())
	case !ok:
		return fmt.Errorf("--%s %s: must be %s", flag, s, want)
	}
	return nil
}

// sizeBetween is checkSize for a size that must be within [lo, hi].
func sizeBetween(flag string, s Size, lo, hi int64) error {
	n := s.Bytes()
	return checkSize(flag, s, lo <= n && n <= hi, fmt.Sprintf("between %s and %s", human(lo), human(hi)))
}

// human prints a size with the largest binary unit that divides it.
func human(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

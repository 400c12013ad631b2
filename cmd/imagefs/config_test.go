package main

import (
	"math"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/auth"
)

// TestParseSize: units, the edges of int64, and what is not a size.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0":                    0,
		"1048576":              1 << 20,
		"32MiB":                32 << 20,
		" 32 mib ":             32 << 20,
		"1G":                   1 << 30,
		"1KB":                  1 << 10,
		"5B":                   5,
		"9223372036854775807":  math.MaxInt64,
		"9223372036854775807B": math.MaxInt64,
		"8388607TiB":           8388607 << 40,
		"8589934591G":          8589934591 << 30,
		"8796093022207M":       8796093022207 << 20,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"9223372036854775808":  "is too large",
		"99999999999999999999": "is too large",
		"17179869185G":         "is too large",
		"8388608TiB":           "is too large",
		"8388608T":             "is too large",
		"8589934592GiB":        "is too large",
		"9007199254740992K":    "is too large",
		"-1":                   "is not a size",
		"-1MiB":                "is not a size",
		"-9223372036854775809": "is not a size",
		"":                     "is not a size",
		"   ":                  "is not a size",
		"MiB":                  "is not a size",
		"G":                    "is not a size",
		"1.5G":                 "is not a size",
		"8EiB":                 "is not a size",
		"12 parsecs":           "is not a size",
	} {
		got, err := parseSize(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseSize(%q) = %d, %v; want an error saying %q", in, got, err, want)
		}
	}
}

// TestSizeFlagsRejectOverflow: an overflowing size is reported by the
// flag's validation, not wrapped into a small or negative one.
func TestSizeFlagsRejectOverflow(t *testing.T) {
	w := WriteConfig{SegmentSize: sizeOf("17179869185G"), UploadWorkers: 4, StagingSize: sizeOf("8388608TiB")}
	r := ReadConfig{CacheSize: sizeOf("9223372036854775808"), Memory: sizeOf("256MiB"), ReadAhead: sizeOf("64MiB"),
		KernelReadAhead: sizeOf("17179869185G"), StallTimeout: 30e9}
	var all []string
	for _, err := range append(w.validate(""), r.validate("")...) {
		all = append(all, err.Error())
	}
	got := strings.Join(all, "\n")
	for _, want := range []string{`--segment-size: "17179869185G" is too large`, `--staging-size: "8388608TiB" is too large`,
		`--cache-size: "9223372036854775808" is too large`, `--kernel-read-ahead: "17179869185G" is too large`} {
		if !strings.Contains(got, want) {
			t.Errorf("%s\ndoes not say %s", got, want)
		}
	}
	if len(all) != 4 {
		t.Errorf("%d errors, want 4:\n%s", len(all), got)
	}
}

// TestUIDGIDRange: ids that would wrap around in 32 bits are refused.
func TestUIDGIDRange(t *testing.T) {
	base := Config{Write: WriteConfig{SegmentSize: sizeOf("32MiB"), UploadWorkers: 4, StagingSize: sizeOf("32GiB")},
		Read: ReadConfig{CacheSize: sizeOf("10GiB"), Memory: sizeOf("256MiB"), ReadAhead: sizeOf("64MiB"),
			KernelReadAhead: sizeOf("16MiB"), StallTimeout: 30e9},
		Files:     FilesConfig{FileMode: modeOf("0644"), DirMode: modeOf("0755")},
		LogFormat: "text", LogLevel: levelOf("info")}
	for _, tc := range []struct {
		uid, gid int
		want     string
	}{
		{0, 0, ""},
		{4294967294, 4294967294, ""},
		{4294967296, 0, "--uid 4294967296: must be between 0 and 4294967294"},
		{0, 4294967295, "--gid 4294967295: must be between 0 and 4294967294"},
		{-1, 0, "--uid -1: must be between"},
		{0, math.MaxInt64, "--gid 9223372036854775807: must be between"},
	} {
		c := base
		c.UID, c.GID = tc.uid, tc.gid
		err := c.Validate()
		// Validate also checks the (empty) credentials: look only at ids.
		var ids []string
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, "--uid") || strings.HasPrefix(line, "--gid") {
					ids = append(ids, line)
				}
			}
		}
		switch {
		case tc.want == "" && len(ids) > 0:
			t.Errorf("uid %d gid %d: %v", tc.uid, tc.gid, ids)
		case tc.want != "" && (len(ids) != 1 || !strings.Contains(ids[0], tc.want)):
			t.Errorf("uid %d gid %d: %v, want %q", tc.uid, tc.gid, ids, tc.want)
		}
	}
}

// TestDefaultDomain: as openstackclient, a password user (or trustee) and
// its project given by name without domains are in --os-default-domain;
// a domain given, an application credential or the IMAGEFS_SERVICE_*
// trustee are left alone.
func TestDefaultDomain(t *testing.T) {
	for _, tc := range []struct {
		name          string
		auth          auth.Config
		user, project string
	}{
		{"password", auth.Config{Identity: auth.Identity{Username: "u", Password: "p", ProjectName: "pr"}}, "default", "default"},
		{"trust", auth.Config{TrustID: "t", Identity: auth.Identity{Username: "u", Password: "p"}}, "default", ""},
		{"user domain given", auth.Config{Identity: auth.Identity{Username: "u", UserDomainName: "D", ProjectName: "pr"}}, "", "default"},
		{"application credential", auth.Config{Identity: auth.Identity{ApplicationCredentialName: "a", Username: "u"}}, "", ""},
		{"service trustee", auth.Config{TrustID: "t", Identity: auth.Identity{Username: "u"}, Service: auth.Identity{Username: "s"}}, "", ""},
	} {
		c := Config{Auth: tc.auth, defaultDomain: "default"}
		if err := c.resolveAuth(); err != nil {
			t.Fatal(err)
		}
		if c.Auth.UserDomainID != tc.user || c.Auth.ProjectDomainID != tc.project {
			t.Errorf("%s: user domain %q, project domain %q; want %q, %q", tc.name, c.Auth.UserDomainID, c.Auth.ProjectDomainID, tc.user, tc.project)
		}
	}
}

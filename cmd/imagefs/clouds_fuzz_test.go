package main

import (
	"bytes"
	"os"
	"reflect"
	"testing"
	"unicode/utf8"

	"gopkg.in/yaml.v2"

	"github.com/imagefs/imagefs/auth"
)

// FuzzCloudsYAML: any clouds.yaml and secure.yaml either fail to parse
// or fill only the fields flags and the environment left empty; values
// written into a clouds.yaml (and a password into secure.yaml) come back
// as they were.
func FuzzCloudsYAML(f *testing.F) {
	for _, v := range []string{"OS_REGION_NAME", "OS_INTERFACE", "OS_CLOUD", "OS_CACERT", "OS_CERT", "OS_KEY"} {
		f.Setenv(v, "")
	}
	// The documented example, its CA file left out (see below).
	example, err := os.ReadFile("../../contrib/auth/clouds.yaml.example")
	if err != nil {
		f.Fatal(err)
	}
	example = bytes.ReplaceAll(example, []byte("cacert:"), []byte("# cacert:"))
	f.Add(example, []byte("clouds:\n  images:\n    auth:\n      application_credential_secret: change-me\n"), "demo", "proj", "RegionOne")
	f.Add([]byte("clouds:\n  images:\n    auth:\n      token: abc\n    verify: maybe\n"), []byte(nil), "", "", "")
	f.Add([]byte("clouds: [1, 2]\n"), []byte("clouds:\n  images: 7\n"), "a b", "x: y", "#")
	f.Add([]byte("a: &a [*a]\n"), []byte("{"), "\"", "'", "\t")
	f.Add([]byte("clouds:\n  images:\n    auth:\n      trust_id: t\n    region_name: 12\n"), []byte{}, "é", "null", "~")
	f.Fuzz(func(t *testing.T, cloudsYAML, secureYAML []byte, user, project, region string) {
		// TLS settings make gophercloud read files: not with made-up paths.
		if !bytes.Contains(cloudsYAML, []byte("cert")) && !bytes.Contains(cloudsYAML, []byte("key")) &&
			!bytes.Contains(secureYAML, []byte("cert")) && !bytes.Contains(secureYAML, []byte("key")) {
			if ao, eo, _, err := parseCloud("images", cloudsYAML, secureYAML, auth.TLSOptions{}); err == nil {
				cfg := auth.Config{AuthURL: "https://flag.example/v3", Region: "flag-region"}
				id := auth.Identity{Username: "flag-user", Password: "flag-secret"}
				applyCloud(&cfg, &id, ao, eo)
				if cfg.AuthURL != "https://flag.example/v3" || cfg.Region != "flag-region" || id.Username != "flag-user" || id.Password != "flag-secret" {
					t.Fatalf("clouds.yaml overrode a flag: %+v %+v", cfg, id)
				}
			}
		}

		for _, s := range []string{user, project, region} {
			if !utf8.ValidString(s) {
				return
			}
		}
		doc := map[string]any{"clouds": map[string]any{"images": map[string]any{
			"auth":        map[string]any{"auth_url": "https://keystone.example/v3", "username": user, "project_name": project, "user_domain_name": "Default"},
			"region_name": region,
		}}}
		sec := map[string]any{"clouds": map[string]any{"images": map[string]any{"auth": map[string]any{"password": project}}}}
		c, err1 := yaml.Marshal(doc)
		s, err2 := yaml.Marshal(sec)
		var back map[string]any
		if err1 != nil || err2 != nil || yaml.Unmarshal(c, &back) != nil || !reflect.DeepEqual(stringsOf(back), stringsOf(doc)) {
			return // a string yaml.v2 itself does not round-trip
		}
		ao, eo, _, err := parseCloud("images", c, s, auth.TLSOptions{})
		if err != nil {
			t.Fatalf("clouds.yaml %q: %v", c, err)
		}
		var cfg auth.Config
		var id auth.Identity
		applyCloud(&cfg, &id, ao, eo)
		if cfg.AuthURL != "https://keystone.example/v3" || id.Username != user || id.ProjectName != project || cfg.Region != region ||
			string(id.Password) != project || id.UserDomainName != "Default" {
			t.Fatalf("clouds.yaml %q, secure.yaml %q gave %+v %+v", c, s, cfg, id)
		}
	})
}

// stringsOf collects the leaf strings of a YAML document, in a canonical form.
func stringsOf(v any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, k := range sortedKeys(x) {
				out = append(out, k)
				walk(x[k])
			}
		case map[any]any:
			m := map[string]any{}
			for k, e := range x {
				ks, ok := k.(string)
				if !ok {
					out = append(out, "\x00non-string key")
					continue
				}
				m[ks] = e
			}
			walk(m)
		case string:
			out = append(out, x)
		default:
			out = append(out, "\x00not a string")
		}
	}
	walk(v)
	return out
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

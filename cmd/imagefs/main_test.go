package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestMain runs the tests without the OpenStack and imagefs settings of
// the environment (test/run.sh runs them with the lab's OS_* exported):
// each test sets what it means to test.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OS_") || strings.HasPrefix(k, "IMAGEFS_") || k == "CREDENTIALS_DIRECTORY" {
			os.Unsetenv(k)
		}
	}
	os.Exit(m.Run())
}

func TestVersionFlag(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	if err := app.Run([]string{"imagefs", "--version"}); err != nil {
		t.Fatal(err)
	}
	if v := out.String(); !strings.HasPrefix(v, "imagefs version ") || strings.TrimSpace(strings.TrimPrefix(v, "imagefs version ")) == "" {
		t.Errorf("--version printed %q", v)
	}
}

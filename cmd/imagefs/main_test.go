package main

import (
	"bytes"
	"strings"
	"testing"
)

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

//go:build integration

// Package integration runs the real imagefs binary against the real Swift
// and Keystone of the lab (test/lab/lab.sh), through real FUSE mounts.
// These tests fail, never skip, when the lab or FUSE is missing.
//
//	test/lab/lab.sh up && eval "$(test/lab/lab.sh env)"
//	go test -tags integration ./test/integration/
package integration

import (
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m, "../..") }

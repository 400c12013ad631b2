//go:build integration

// Package bench holds the benchmarks of imagefs against the lab: the real
// binary, real mounts, the real Swift, compared in the same run with the
// raw Swift client (ncw/swift). Run them with test/bench/run.sh; they are
// not part of test/run.sh. The lab machine is shared and small: numbers
// are noisy, so every benchmark repeats its measurements and reports the
// spread.
package bench

import (
	"testing"

	"github.com/imagefs/imagefs/test/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m, "../..") }

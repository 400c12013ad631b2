package segmentstest_test

import (
	"testing"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

// TestStoreContract runs the ObjectStore contract against the fake; the
// lab runs the same against real Swift (test/integration).
func TestStoreContract(t *testing.T) {
	segmentstest.RunStoreTests(t, func(t *testing.T) (segments.ObjectStore, string) {
		st := segmentstest.New()
		if err := st.CreateContainer(t.Context(), "c"); err != nil {
			t.Fatal(err)
		}
		return st, "c"
	})
}

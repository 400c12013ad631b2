//go:build integration

package integration

import (
	"testing"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
	"github.com/imagefs/imagefs/test/labtest"
)

// TestStoreContract runs the ObjectStore contract against the lab's real
// Swift, through a SwiftStore made as the daemon makes it (the keeper's
// authenticator and transport) but without Retrying: the contract is the
// adapter's, and a retry would hide what Swift answered. Each subtest has
// a container of its own, removed (with its _segments sibling) at the end.
func TestStoreContract(t *testing.T) {
	st := segments.NewSwiftStore(segments.SwiftOptions{
		Auth:      labtest.Keeper.Authenticator(),
		Transport: labtest.Keeper.Transport(segments.DefaultTransport()),
	})
	segmentstest.RunStoreTests(t, func(t *testing.T) (segments.ObjectStore, string) {
		return st, labtest.NewContainer(t)
	})
}

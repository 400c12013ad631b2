package segments

import (
	"context"
	"errors"
	"testing"
)

// headStore answers Head only.
type headStore struct {
	ObjectStore
	in Info
}

func (h headStore) Head(context.Context, string, string) (Info, error) { return h.in, nil }

func TestBlockDigests(t *testing.T) {
	const size = 3<<20 + 5
	block, crcs := zeroDigests(size)
	meta := digestMeta(nil, block, crcs)
	seg := Segment{Container: "c_segments", Object: "a/b/00000000", ETag: "e1", Size: size}
	st := headStore{in: Info{Size: size, ETag: "e1", Meta: meta}}

	gb, gc, err := BlockDigests(t.Context(), st, seg)
	if err != nil || gb != block || len(gc) != len(crcs) || gc[0] != crcs[0] || gc[len(gc)-1] != crcs[len(crcs)-1] {
		t.Fatalf("BlockDigests = %d, %d crcs, %v; want %d, %d", gb, len(gc), err, block, len(crcs))
	}
	if _, _, err := BlockDigests(t.Context(), headStore{in: Info{Size: size, ETag: "e2", Meta: meta}}, seg); !errors.Is(err, ErrStale) {
		t.Errorf("another ETag: %v, want ErrStale", err)
	}
	if b, _, err := BlockDigests(t.Context(), headStore{in: Info{Size: size, ETag: "e1"}}, seg); b != 0 || err != nil {
		t.Errorf("no digests: block %d, %v; want 0, nil", b, err)
	}
	if b, _, err := BlockDigests(t.Context(), st, Segment{Container: "c", Object: "o", ETag: "e1"}); b != 0 || err != nil {
		t.Errorf("unknown size: block %d, %v; want 0, nil (no HEAD)", b, err)
	}
}

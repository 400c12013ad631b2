package segments

import (
	"context"
	"fmt"
)

// BlockDigests returns the block digests (CRC-32C of each block of block
// bytes, in order) that imagefs stored with segment object s when it was
// written, from a HEAD of it: what bytes of s that come from somewhere
// other than Swift (a peer's cache) are checked against. block is 0 when
// s has none (written by another tool, or its size unknown). A HEAD that
// finds another version of s (ETag) wraps ErrStale.
func BlockDigests(ctx context.Context, st ObjectStore, s Segment) (block int64, crcs []uint32, err error) {
	if s.Size <= 0 || s.Size > maxDigestedSize || s.ETag == "" {
		return 0, nil, nil
	}
	in, err := st.Head(ctx, s.Container, s.Object)
	if err != nil {
		return 0, nil, err
	}
	if in.ETag != s.ETag || in.Size != s.Size {
		return 0, nil, fmt.Errorf("block digests of %s: %w", objPath(s.Container, s.Object), ErrStale)
	}
	block, crcs, ok := parseDigestMeta(in.Meta, s.Size)
	if !ok {
		return 0, nil, nil
	}
	return block, crcs, nil
}

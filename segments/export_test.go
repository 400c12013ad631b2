package segments

import "hash"

// DigestMetaForTest returns the block digests of data as object metadata,
// as the Writer stores them.
func DigestMetaForTest(data []byte) map[string]string {
	block, crcs := blockDigests(int64(len(data)), func(lo, hi int64, h hash.Hash) { h.Write(data[lo:hi]) })
	return digestMeta(nil, block, crcs)
}

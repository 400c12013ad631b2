package segments

// underlay is what a new version holds where nothing was written: the bytes
// of the version it started from (WriterOptions.Under: a file reopened
// without O_TRUNC), as far as they are still visible, then zeros. A file
// created or truncated has an empty underlay: zeros everywhere. Both sinks
// (the window and staging) read it for the bytes they do not have, and
// the commit references it rather than uploading it again. Guarded by the
// Writer's mu.
type underlay struct {
	m    *Manifest // nil: none
	size int64     // bytes of m still visible; a truncate hides the rest for good
}

func newUnderlay(m *Manifest) underlay {
	if m == nil {
		return underlay{}
	}
	return underlay{m: m, size: m.Size()}
}

// cut hides what lies at or after size (a truncate), also if the file
// grows again.
func (b *underlay) cut(size int64) {
	if size < b.size {
		b.size = size
	}
}

// piece returns the segment range that holds the underlay's bytes at pos, at
// most n of them, and false where the underlay is zeros.
func (b *underlay) piece(pos, n int64) (Segment, bool) {
	if pos >= b.size || b.m == nil {
		return Segment{}, false
	}
	i, inner, _ := b.m.Locate(pos)
	s := b.m.Segments[i]
	k := min(n, s.Length-inner, b.size-pos)
	return Segment{Container: s.Container, Object: s.Object, ETag: s.ETag, Offset: s.Offset + inner, Length: k, Size: s.Size}, true
}

// read fills dst with the underlay's bytes at pos: zeros where it has none,
// pieces to read from Swift (appended to remote) where it has.
func (b *underlay) read(dst []byte, pos int64, remote []remoteRead) []remoteRead {
	for len(dst) > 0 {
		s, ok := b.piece(pos, int64(len(dst)))
		if !ok {
			clear(dst)
			return remote
		}
		remote = append(remote, remoteRead{seg: s, dst: dst[:s.Length]})
		dst = dst[s.Length:]
		pos += s.Length
	}
	return remote
}

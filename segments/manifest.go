package segments

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Segment is one piece of an object's bytes: Length bytes at Offset of a
// segment object. A plain object is a manifest of one segment, itself.
type Segment struct {
	Container, Object string
	ETag              string // pins the segment's version (If-Match); may be empty
	Offset, Length    int64
	// Size is the size of the whole segment object, 0 if unknown. A new
	// manifest that reuses the segment (a file rewritten in place) needs it.
	Size int64
}

// Manifest is the resolved, flat list of segments of one version of an
// object. It is immutable once built and safe for concurrent use.
type Manifest struct {
	Segments []Segment
	// Version names the version the manifest was read from, for caches
	// (the block cache keys blocks on it, in memory and on disk): the
	// object's name and every segment with its ETag (VersionKey), so two
	// opens of an unchanged object share it, and any change to the object
	// or its segments gives another. "" if some segment has no ETag: such
	// a version cannot be pinned, so nothing of it may be shared.
	Version string
	starts  []int64 // starts[i] is the object offset of Segments[i]
	size    int64
}

// NewManifest builds a Manifest from its segments.
func NewManifest(segs []Segment, version string) *Manifest {
	m := &Manifest{Segments: segs, Version: version, starts: make([]int64, len(segs))}
	for i, s := range segs {
		m.starts[i] = m.size
		m.size += s.Length
	}
	return m
}

// VersionKey is Manifest.Version for object of container made of m's
// segments (the formula is part of the disk cache's format: changing it
// drops every cached block).
func VersionKey(container, object string, m *Manifest) string {
	h := sha256.New()
	fmt.Fprintf(h, "imagefs-version-1\x00%s\x00%s\x00%d\x00", container, object, m.Size())
	for _, s := range m.Segments {
		if s.ETag == "" {
			return ""
		}
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d\x00%d\x00", s.Container, s.Object, s.ETag, s.Offset, s.Length)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Size is the object's size in bytes.
func (m *Manifest) Size() int64 { return m.size }

// Start is the object offset where segment i begins.
func (m *Manifest) Start(i int) int64 { return m.starts[i] }

// Locate returns the segment that holds object offset off and the offset
// within that segment's range. ok is false when off is outside the object.
func (m *Manifest) Locate(off int64) (i int, inner int64, ok bool) {
	if off < 0 || off >= m.size {
		return 0, 0, false
	}
	i = sort.Search(len(m.starts), func(j int) bool { return m.starts[j] > off }) - 1
	return i, off - m.starts[i], true
}

// Bounds of what a manifest may expand to, whatever Swift answers: nesting
// (Swift allows 10 levels), entries in one manifest (Swift's default is
// 1000), leaf segments in all (2 TiB of 32 MiB segments is 65536; each
// takes ~150 bytes of memory) and the size of the object.
const (
	maxNesting     = 10
	maxFanOut      = 100_000
	maxLeafObjects = 1_000_000
)

// errManifest wraps what makes a manifest unusable (cycles, bounds).
var errManifest = errors.New("unusable manifest")

// sloGuard checks a walk through nested SLO manifests: depth, cycles
// (a manifest among its own ancestors), fan-out and the leaves in all.
type sloGuard struct {
	path   []string // the manifests being expanded, outermost first
	leaves int
}

func (g *sloGuard) enter(container, object string) error {
	key := container + "/" + object
	if len(g.path) >= maxNesting {
		return fmt.Errorf("%w: SLO %s nested more than %d levels", errManifest, key, maxNesting)
	}
	for _, p := range g.path {
		if p == key {
			return fmt.Errorf("%w: SLO %s references itself (through %s)", errManifest, key, strings.Join(g.path, " -> "))
		}
	}
	g.path = append(g.path, key)
	return nil
}

func (g *sloGuard) leave() { g.path = g.path[:len(g.path)-1] }

func (g *sloGuard) entries(n int) error {
	if n > maxFanOut {
		return fmt.Errorf("%w: SLO %s has %d entries, more than %d", errManifest, g.path[len(g.path)-1], n, maxFanOut)
	}
	return nil
}

func (g *sloGuard) leaf() error {
	if g.leaves++; g.leaves > maxLeafObjects {
		return fmt.Errorf("%w: SLO %s expands to more than %d segments", errManifest, g.path[0], maxLeafObjects)
	}
	return nil
}

// Resolve reads the current version of an object and flattens it into a
// Manifest: plain objects, SLOs (nested too) and DLOs (Glance's layout
// among them). It returns the object's Info as well.
func Resolve(ctx context.Context, st ObjectStore, container, object string) (*Manifest, Info, error) {
	in, err := st.Head(ctx, container, object)
	if err != nil {
		return nil, Info{}, err
	}
	m, err := ResolveInfo(ctx, st, in)
	return m, in, err
}

// ResolveInfo is Resolve for an object already HEADed.
func ResolveInfo(ctx context.Context, st ObjectStore, in Info) (*Manifest, error) {
	var segs []Segment
	var err error
	switch {
	case in.SLO:
		segs, err = flattenSLO(ctx, st, in.Container, in.Name, 0, -1, &sloGuard{})
	case in.DLO != "":
		segs, err = listDLO(ctx, st, in.DLO)
	default:
		segs = []Segment{{Container: in.Container, Object: in.Name, ETag: in.ETag, Length: in.Size, Size: in.Size}}
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %s/%s: %w", in.Container, in.Name, err)
	}
	m := NewManifest(segs, "")
	m.Version = VersionKey(in.Container, in.Name, m)
	if in.SLO || in.DLO != "" {
		if m.Size() != in.Size && !(in.DLO != "" && in.Size == 0) {
			return nil, fmt.Errorf("resolve %s/%s: %w: segments hold %d bytes, object says %d",
				in.Container, in.Name, ErrStale, m.Size(), in.Size)
		}
	}
	return m, nil
}

// flattenSLO expands an SLO manifest into leaf segments, keeping only
// bytes [off, off+n) of it (n < 0: all).
func flattenSLO(ctx context.Context, st ObjectStore, container, object string, off, n int64, g *sloGuard) ([]Segment, error) {
	if err := g.enter(container, object); err != nil {
		return nil, err
	}
	defer g.leave()
	entries, err := st.GetManifest(ctx, container, object)
	if err != nil {
		return nil, err
	}
	if err := g.entries(len(entries)); err != nil {
		return nil, err
	}
	var out []Segment
	var pos int64 // offset of the current entry within this manifest
	for _, e := range entries {
		eOff := e.Offset
		eLen := e.Bytes()
		if eLen < 0 || eOff < 0 || pos > math.MaxInt64-eLen {
			return nil, fmt.Errorf("%w: SLO %s/%s: entry %s/%s has a bad size or range", errManifest, container, object, e.Container, e.Object)
		}
		// Clip the entry to the window [off, off+n) of this manifest.
		lo, hi := pos, pos+eLen
		pos = hi
		if n >= 0 && lo >= off+n {
			break
		}
		if hi <= off {
			continue
		}
		skip := max(off-lo, 0)
		take := eLen - skip
		if n >= 0 {
			take = min(take, off+n-lo-skip)
		}
		if take <= 0 {
			continue
		}
		if e.SubSLO {
			sub, err := flattenSLO(ctx, st, e.Container, e.Object, eOff+skip, take, g)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
			continue
		}
		if err := g.leaf(); err != nil {
			return nil, err
		}
		out = append(out, Segment{Container: e.Container, Object: e.Object, ETag: e.ETag,
			Offset: eOff + skip, Length: take, Size: e.Size})
	}
	return out, nil
}

// listDLO lists a DLO's segments: every object under the manifest's prefix,
// in name order (which is what Swift concatenates).
func listDLO(ctx context.Context, st ObjectStore, manifest string) ([]Segment, error) {
	c, prefix, err := parseDLOManifest(manifest)
	if err != nil {
		return nil, err
	}
	var segs []Segment
	var total int64
	err = st.List(ctx, c, prefix, 0, func(in Info) error {
		if in.Size > 0 {
			if len(segs) >= maxLeafObjects || total > math.MaxInt64-in.Size {
				return fmt.Errorf("%w: DLO %s has more than %d segments or bytes than a size can hold", errManifest, manifest, maxLeafObjects)
			}
			total += in.Size
			segs = append(segs, Segment{Container: c, Object: in.Name, ETag: in.ETag, Length: in.Size, Size: in.Size})
		}
		return nil
	})
	return segs, err
}

// Purge deletes an object and everything its manifest references, at
// once, without retirement, grace or leases: for tests and benchmarks that
// own their container. The filesystem never uses it (see Versions).
func Purge(ctx context.Context, st ObjectStore, container, object string) error {
	in, err := st.Head(ctx, container, object)
	if err != nil {
		return err
	}
	garbage, err := ObjectsOf(ctx, st, in)
	if err != nil {
		return fmt.Errorf("list segments of %s/%s: %w", in.Container, in.Name, err)
	}
	if err := st.Delete(ctx, in.Container, in.Name); err != nil {
		return err
	}
	return deleteGroups(ctx, st, garbage)
}

func deleteGroups(ctx context.Context, st ObjectStore, groups map[string][]string) error {
	var firstErr error
	for c, objs := range groups {
		if err := st.DeleteMany(ctx, c, objs); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("delete segments in %s: %w", c, err)
		}
	}
	return firstErr
}

// sloObjects lists every object an SLO manifest references, nested
// manifests included (but not the manifest itself), grouped by container.
func sloObjects(ctx context.Context, st ObjectStore, container, object string, _ int) (map[string][]string, error) {
	out := map[string][]string{}
	seen := map[string]bool{}
	err := sloObjectsInto(ctx, st, container, object, &sloGuard{}, out, seen)
	return out, err
}

func sloObjectsInto(ctx context.Context, st ObjectStore, container, object string, g *sloGuard, out map[string][]string, seen map[string]bool) error {
	if err := g.enter(container, object); err != nil {
		return err
	}
	defer g.leave()
	entries, err := st.GetManifest(ctx, container, object)
	if err != nil {
		return err
	}
	if err := g.entries(len(entries)); err != nil {
		return err
	}
	for _, e := range entries {
		key := e.Container + "/" + e.Object
		if seen[key] {
			continue
		}
		seen[key] = true
		if e.SubSLO {
			if err := sloObjectsInto(ctx, st, e.Container, e.Object, g, out, seen); err != nil {
				return err
			}
		} else if err := g.leaf(); err != nil {
			return err
		}
		out[e.Container] = append(out[e.Container], e.Object)
	}
	return nil
}

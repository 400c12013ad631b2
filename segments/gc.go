package segments

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// GCOptions configure FindOrphans.
type GCOptions struct {
	Container string // the container whose manifests reference segments
	// SegmentContainer is searched for orphans; default Container+"_segments".
	SegmentContainer string
	// MinAge protects uploads in progress: a segment younger than this (by
	// its upload id's timestamp or its Last-Modified, whichever is newer)
	// is never an orphan, nor is any other segment of its upload.
	MinAge time.Duration
	Now    func() time.Time // default time.Now
	// Parallel is the number of concurrent HEADs and manifest reads
	// (default 8).
	Parallel int
	// Protected, if set, names objects gc must leave alone (Versions:
	// listed in a retirement record, pinned by a live lease).
	Protected func(container, object string) bool
}

// Upload is a group of segment objects that share one upload prefix
// (<path>/<upload id>/ for imagefs, the object's directory for other tools).
type Upload struct {
	Prefix  string // in the segment container, ending in "/"
	Objects []string
	Bytes   int64
	Newest  time.Time // the youngest evidence of activity
}

// GCReport is what FindOrphans found.
type GCReport struct {
	Container, SegmentContainer string
	Objects                     int // objects in Container
	Manifests                   int // SLO and DLO manifests among them
	Segments                    int // objects in SegmentContainer
	Referenced                  int // segment objects some manifest references
	Protected                   int // unreferenced, but retired (reaped by their record) or held
	// Orphans are unreferenced uploads older than MinAge, safe to delete.
	Orphans []Upload
	// Young are unreferenced uploads younger than MinAge: uploads in
	// progress, or just abandoned. They are left alone.
	Young []Upload
}

// OrphanSegments counts the segment objects of the orphan uploads.
func (r *GCReport) OrphanSegments() (n int, bytes int64) {
	for _, u := range r.Orphans {
		n += len(u.Objects)
		bytes += u.Bytes
	}
	return n, bytes
}

// uploadIDRe matches NewUploadID's ids.
var uploadIDRe = regexp.MustCompile(`^(\d{8}T\d{6}Z)-[0-9a-f]{12}$`)

// uploadOf splits a segment name into its upload prefix and the time its
// upload id says it started (zero if the name is not imagefs').
func uploadOf(name string) (prefix string, started time.Time) {
	parts := strings.Split(name, "/")
	for i := len(parts) - 2; i >= 0; i-- {
		if m := uploadIDRe.FindStringSubmatch(parts[i]); m != nil {
			t, err := time.Parse("20060102T150405Z", m[1])
			if err == nil {
				return strings.Join(parts[:i+1], "/") + "/", t
			}
		}
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i+1], time.Time{}
	}
	return name, time.Time{}
}

// FindOrphans lists the segments in o.SegmentContainer that no manifest in
// o.Container references (nested manifests, the per-upload zero segments
// and DLO prefixes count as references), grouped by upload. Objects that
// o.Protected names (a retirement record lists them, a lease pins them)
// are never orphans, and neither is Versions' state.
//
// The segment container is listed before the manifests are read, so a
// segment that appears meanwhile is not even a candidate; an upload that
// commits meanwhile is young. Any error reading a manifest fails the whole
// search: gc never deletes on incomplete knowledge.
func FindOrphans(ctx context.Context, st ObjectStore, o GCOptions) (*GCReport, error) {
	if o.SegmentContainer == "" {
		o.SegmentContainer = o.Container + "_segments"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	rep := &GCReport{Container: o.Container, SegmentContainer: o.SegmentContainer}
	if _, err := st.HeadContainer(ctx, o.Container); err != nil {
		return nil, fmt.Errorf("container %s: %w", o.Container, err)
	}
	var segs []Info
	err := st.List(ctx, o.SegmentContainer, "", 0, func(in Info) error {
		if !strings.HasPrefix(in.Name, reservedPrefix) {
			segs = append(segs, in)
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return rep, nil // no segment container: nothing can be orphaned
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", o.SegmentContainer, err)
	}
	rep.Segments = len(segs)
	sc, err := scanReferences(ctx, st, o.Container, o.Parallel)
	if err != nil {
		return nil, err
	}
	rep.Objects, rep.Manifests = len(sc.objects), len(sc.manifests)
	refs := sc.referencedIn(o.SegmentContainer)
	now := o.Now()
	groups := map[string]*Upload{}
	var order []string
	for _, s := range segs {
		if refs[s.Name] {
			rep.Referenced++
			continue
		}
		if o.Protected != nil && o.Protected(o.SegmentContainer, s.Name) {
			rep.Protected++
			continue
		}
		prefix, started := uploadOf(s.Name)
		u := groups[prefix]
		if u == nil {
			u = &Upload{Prefix: prefix}
			groups[prefix] = u
			order = append(order, prefix)
		}
		u.Objects = append(u.Objects, s.Name)
		u.Bytes += s.Size
		for _, t := range []time.Time{started, s.LastModified} {
			if t.After(u.Newest) {
				u.Newest = t
			}
		}
	}
	sort.Strings(order)
	for _, p := range order {
		u := groups[p]
		// An upload whose referenced segments exist too is one that
		// committed: its unreferenced leftovers are still only as old as
		// the upload itself, so the same age rule applies.
		if now.Sub(u.Newest) < o.MinAge {
			rep.Young = append(rep.Young, *u)
		} else {
			rep.Orphans = append(rep.Orphans, *u)
		}
	}
	return rep, nil
}

// scan is what the manifests of a container reference at one moment.
type scan struct {
	refs      map[string]bool // container + "\x00" + name of every referenced object
	objects   map[string]Info // the container's objects, by name (as listed)
	manifests map[string]bool // names of the SLO and DLO manifests among them
}

// referencedIn returns the names of the objects of container c the scan
// saw referenced.
func (s *scan) referencedIn(c string) map[string]bool {
	out := map[string]bool{}
	for k := range s.refs {
		if name, ok := strings.CutPrefix(k, c+"\x00"); ok {
			out[name] = true
		}
	}
	return out
}

// scanReferences reads every manifest of container (nested manifests,
// DLO prefixes count) and returns what they reference. Any error fails the
// whole scan: nothing is ever deleted on incomplete knowledge.
func scanReferences(ctx context.Context, st ObjectStore, container string, parallel int) (*scan, error) {
	sc := &scan{refs: map[string]bool{}, objects: map[string]Info{}, manifests: map[string]bool{}}
	var objs []Info
	err := st.List(ctx, container, "", 0, func(in Info) error {
		objs = append(objs, in)
		sc.objects[in.Name] = in
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", container, err)
	}
	var mu sync.Mutex // guards sc.refs, sc.manifests
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, in := range objs {
		if strings.HasSuffix(in.Name, "/") {
			continue // a directory marker
		}
		g.Go(func() error {
			h, err := st.Head(gctx, container, in.Name)
			if errors.Is(err, ErrNotFound) {
				return nil // deleted meanwhile
			}
			if err != nil {
				return fmt.Errorf("head %s/%s: %w", container, in.Name, err)
			}
			if !h.SLO && h.DLO == "" {
				return nil
			}
			groups, err := ObjectsOf(gctx, st, h)
			if errors.Is(err, ErrNotFound) {
				// Overwritten or deleted while we read it: the new version
				// was uploaded recently, so its segments are young.
				return nil
			}
			if err != nil {
				return fmt.Errorf("read manifest %s/%s: %w", container, in.Name, err)
			}
			mu.Lock()
			defer mu.Unlock()
			sc.manifests[in.Name] = true
			for c, names := range groups {
				for _, n := range names {
					sc.refs[c+"\x00"+n] = true
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return sc, nil
}

// ObjectsOf lists the objects a large object's manifest references (for
// an SLO, nested manifests included, but not the manifest itself), grouped
// by container. A plain object references nothing.
func ObjectsOf(ctx context.Context, st ObjectStore, in Info) (map[string][]string, error) {
	switch {
	case in.SLO:
		return sloObjects(ctx, st, in.Container, in.Name, 0)
	case in.DLO != "":
		segs, err := listDLO(ctx, st, in.DLO)
		if err != nil {
			return nil, err
		}
		groups := map[string][]string{}
		for _, s := range segs {
			groups[s.Container] = append(groups[s.Container], s.Object)
		}
		return groups, nil
	}
	return nil, nil
}

// DeleteOrphans deletes the orphan uploads of rep. It first reads the
// manifests again and spares anything referenced now (a rename moves a
// manifest to a name the first pass may have already passed), or
// protected now (o.Protected is asked again), and returns how many
// objects it deleted.
func DeleteOrphans(ctx context.Context, st ObjectStore, rep *GCReport, o GCOptions) (int, error) {
	if o.SegmentContainer == "" {
		o.SegmentContainer = o.Container + "_segments"
	}
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	sc, err := scanReferences(ctx, st, o.Container, o.Parallel)
	if err != nil {
		return 0, fmt.Errorf("second pass: %w", err)
	}
	refs := sc.referencedIn(o.SegmentContainer)
	var doomed []string
	for _, u := range rep.Orphans {
		spared := false
		for _, n := range u.Objects {
			if refs[n] || (o.Protected != nil && o.Protected(o.SegmentContainer, n)) || strings.HasPrefix(n, reservedPrefix) {
				spared = true
				break
			}
		}
		if !spared {
			doomed = append(doomed, u.Objects...)
		}
	}
	if len(doomed) == 0 {
		return 0, nil
	}
	if err := st.DeleteMany(ctx, o.SegmentContainer, doomed); err != nil {
		return 0, fmt.Errorf("delete orphans in %s: %w", o.SegmentContainer, err)
	}
	return len(doomed), nil
}

package fs

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imagefs/imagefs/segments"
)

// Names that are parts of other images.
//
// A dynamic large object is a zero-byte manifest whose content is every
// object under a prefix (Glance stores image "<uuid>" as parts
// "<uuid>-00001"… next to it). Its parts are hidden from listings and
// lookups, and a name under such a prefix cannot be created or renamed
// onto: the new file would become part of that image. Glance's parts are
// hidden even before their manifest exists (an upload in progress) by
// their shape, a UUID, a dash and five digits. The name ".imagefs" at the
// root of a container is imagefs' own (segments.ReservedName).
//
// Only DLO manifests in the same directory are found (from its listing):
// that is where Glance and the swift CLI put them.

// glancePart is the name of a Glance image part ("%s-%05d").
var glancePart = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-[0-9]{5}$`)

// dloRef is a DLO manifest and the prefix of its parts (this container).
type dloRef struct{ manifest, prefix string }

// dloCache remembers the DLO manifests of directories.
type dloCache struct {
	mu sync.Mutex // guards dirs
	// dirs maps a directory's object prefix to what its listing showed.
	dirs map[string]dloEntry
}

type dloEntry struct {
	refs []dloRef
	at   time.Time
}

// dloTTL is how long a directory's DLO manifests are trusted: they are
// rare and change rarely (creates check afresh).
func (r *Root) dloTTL() time.Duration { return max(r.o.AttrTTL, 10*time.Second) }

// forgetDLOs drops the cached manifests of the directory of obj.
func (r *Root) forgetDLOs(obj string) {
	dir := obj[:strings.LastIndexByte(obj, '/')+1]
	r.dlos.mu.Lock()
	delete(r.dlos.dirs, dir)
	r.dlos.mu.Unlock()
}

// dlosIn returns the DLO manifests of the directory whose objects start
// with prefix; fresh skips the cache.
func (r *Root) dlosIn(ctx context.Context, prefix string, fresh bool) ([]dloRef, error) {
	r.dlos.mu.Lock()
	e, ok := r.dlos.dirs[prefix]
	r.dlos.mu.Unlock()
	if ok && !fresh && time.Since(e.at) < r.dloTTL() {
		return e.refs, nil
	}
	var zero []string
	err := r.c.List(ctx, prefix, '/', func(in segments.Info) error {
		if !in.Subdir && in.Size == 0 && !strings.HasSuffix(in.Name, "/") {
			zero = append(zero, in.Name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r.findDLOs(ctx, prefix, zero), nil
}

// findDLOs HEADs the zero-byte objects of a directory listing (Swift lists
// DLO manifests as 0 bytes), through the metadata cache, and remembers the
// DLOs among them. A failed HEAD finds nothing.
func (r *Root) findDLOs(ctx context.Context, prefix string, zero []string) []dloRef {
	refs := make([]dloRef, len(zero))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, name := range zero {
		g.Go(func() error {
			in, err := r.head(gctx, name)
			if err != nil {
				return nil
			}
			// Only parts in this container below this directory can be
			// in its listing or take its names.
			if c, p, ok := segments.DLOTarget(in); ok && c == r.c.Name() && p != "" && strings.HasPrefix(p, prefix) && p != name {
				refs[i] = dloRef{manifest: name, prefix: p}
			}
			return nil
		})
	}
	_ = g.Wait()
	out := refs[:0]
	for _, d := range refs {
		if d.prefix != "" {
			out = append(out, d)
		}
	}
	r.dlos.mu.Lock()
	r.dlos.dirs[prefix] = dloEntry{refs: out, at: time.Now()}
	r.dlos.mu.Unlock()
	return out
}

// partOf returns the DLO manifest among refs whose parts include obj, or "".
func partOf(refs []dloRef, obj string) string {
	for _, d := range refs {
		if obj != d.manifest && strings.HasPrefix(obj, d.prefix) {
			return d.manifest
		}
	}
	return ""
}

// hidden reports whether rel is kept out of sight by name alone: a
// Glance part, or imagefs' reserved name.
func (r *Root) hidden(rel string) bool {
	return glancePart.MatchString(baseName(rel)) || r.object(rel) == segments.ReservedName
}

// mayCreate refuses a new name (create, mkdir, the target of a rename)
// that would become part of an image or is reserved, with EPERM and a log
// line that says why.
func (r *Root) mayCreate(ctx context.Context, op, rel string) syscall.Errno {
	obj := r.object(rel)
	if r.hidden(rel) {
		r.o.Log.Warn(op+" refused: the name is reserved for the parts of a Glance image (UUID-NNNNN) or for imagefs itself", "path", rel)
		return syscall.EPERM
	}
	dir := obj[:strings.LastIndexByte(obj, '/')+1]
	refs, err := r.dlosIn(ctx, dir, true)
	if err != nil {
		return r.errnoOf(op, rel, err)
	}
	if m := partOf(refs, obj); m != "" {
		r.o.Log.Warn(op+" refused: the name falls under the prefix of the dynamic large object "+m+
			" and would become part of that image; choose another name", "path", rel, "image", m)
		return syscall.EPERM
	}
	return 0
}

// isPart reports whether obj, an existing object, is a part of a DLO of
// its directory (cached listing).
func (r *Root) isPart(ctx context.Context, obj string) (bool, error) {
	dir := obj[:strings.LastIndexByte(obj, '/')+1]
	refs, err := r.dlosIn(ctx, dir, false)
	if err != nil {
		return false, err
	}
	return partOf(refs, obj) != "", nil
}

// cachedDLOs returns the DLO manifests an earlier listing of the
// directory found, if still trusted; nil otherwise.
func (r *Root) cachedDLOs(prefix string) []dloRef {
	r.dlos.mu.Lock()
	defer r.dlos.mu.Unlock()
	if e, ok := r.dlos.dirs[prefix]; ok && time.Since(e.at) < r.dloTTL() {
		return append([]dloRef(nil), e.refs...)
	}
	return nil
}

// rememberDLOs records the DLO manifests a complete listing of the
// directory found (it began at at).
func (r *Root) rememberDLOs(prefix string, refs []dloRef, at time.Time) {
	r.dlos.mu.Lock()
	r.dlos.dirs[prefix] = dloEntry{refs: refs, at: at}
	r.dlos.mu.Unlock()
}

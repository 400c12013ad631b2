package segments

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Versions is the one owner of the versions of the objects of a mount:
// what each version references, when it is retired, and when its objects
// may go. Commit, overwrite, unlink, rename, abort and gc all go through
// it; the fs package only takes and releases holds.
//
// The model, all of it recorded in Swift so that every host sees it:
//
//   - A version is a manifest (or plain object) at a name, and the objects
//     it references: segments, nested manifests, the zero segment, a DLO's
//     parts. Segment names carry a unique upload id, so versions never
//     share a segment unless one was built from another (a file reopened
//     without O_TRUNC references the segments it did not change) or a
//     rename copied the manifest.
//   - Retiring a version (it is being replaced or removed) writes a
//     retirement record first (write-ahead): the time and the objects the
//     version owns. Nothing is deleted then. A record of a change that did
//     not happen (the commit failed) is harmless, see reaping.
//   - A host that has a version open (a reader, a writer building on it, a
//     rename in flight) holds it: its lease object lists the upload
//     prefixes it pins, and is rewritten every LeaseTTL/3 while it holds
//     anything. A lease not refreshed for LeaseTTL is dead (a crashed
//     host). A release lingers for a moment, covering the container
//     listing's lag behind a new manifest that references the objects.
//   - Reaping takes the records older than the grace period, reads every
//     manifest of the container (what is referenced now, by any name),
//     then the live leases, and deletes the recorded objects that are
//     neither referenced nor pinned. A record is removed once all its
//     objects are gone or referenced again; a pinned object keeps it.
//
// A delete only ever reaches objects the retired version owns: segment
// container objects below the mount's prefix, and the parts in the mounted
// container of a DLO stored the way Glance stores them (manifest "<name>",
// parts "<name>-…"; checked against the ETags recorded, so a file created
// there since is never touched). Never a manifest, never an object of
// another container, never an object outside the prefix: such references
// lose the manifest only, and say so in the log.
//
// State lives in the segment container under reservedPrefix: leases at
// .imagefs/leases/<host> and records at .imagefs/retired/<time>-<host>-<id>.
//
// All methods are safe for concurrent use.
type Versions struct {
	st   ObjectStore
	o    VersionsOptions
	kick chan struct{} // wakes the lease writer

	mu       sync.Mutex      // guards pins, written, writeErr, stored
	pins     map[pin]*pinRef // what this host holds
	written  time.Time       // when the lease was last written
	writeErr error           // the last lease write's error
	stored   bool            // a lease of this host is in Swift

	leaseMu sync.Mutex // serialises lease writes
}

// VersionsOptions configure Versions.
type VersionsOptions struct {
	Container string
	// SegmentContainer holds the segments and the state; default
	// Container+"_segments".
	SegmentContainer string
	// Scope is the mount's object-name prefix ("" or ending in "/"): no
	// delete reaches an object outside it.
	Scope string
	// Host names this process's lease; unique per mount process (default:
	// a random id).
	Host string
	// Grace is how long a retired version is kept at least (default
	// DefaultGrace).
	Grace time.Duration
	// LeaseTTL is how long a lease stays valid without a refresh (default
	// DefaultLeaseTTL); it is refreshed every third of it.
	LeaseTTL time.Duration
	// Linger is how long a released hold of a writer or a rename still
	// pins (default: DefaultLinger, at most Grace): the container listing
	// may lag behind the manifest that now references the objects.
	Linger time.Duration
	// ReapInterval is how often Run reaps this host's due records; 0
	// turns reaping in Run off (imagefs gc reaps every host's).
	ReapInterval time.Duration
	// Parallel bounds the HEADs and manifest reads of a scan (default 8).
	Parallel int
	Log      *slog.Logger
	Now      func() time.Time
	// Failpoint, if set, is called with the name of each step of commit,
	// rename, unlink and reap (tests kill the daemon there).
	Failpoint func(name string)
}

// Defaults of VersionsOptions.
const (
	DefaultGrace    = 15 * time.Minute
	DefaultLeaseTTL = 10 * time.Minute
	DefaultLinger   = 2 * time.Minute
)

// reservedPrefix is where Versions keeps its state in the segment
// container. No segment can be named so: segments live below an object's
// name and an upload id, and fs refuses the name ".imagefs" at the root.
const reservedPrefix = ".imagefs/"

const (
	leasePrefix  = reservedPrefix + "leases/"
	recordPrefix = reservedPrefix + "retired/"
)

// ReservedName is the object name, at the root of a container, that
// imagefs keeps for itself.
const ReservedName = ".imagefs"

// pin is a set of objects a hold protects: every object of container c
// whose name starts with p (p ends in "/": an upload), or exactly p.
type pin struct {
	C     string `json:"c"`
	P     string `json:"p"`
	Exact bool   `json:"exact,omitempty"`
}

func (p pin) covers(c, o string) bool {
	if c != p.C {
		return false
	}
	if p.Exact {
		return o == p.P
	}
	return strings.HasPrefix(o, p.P)
}

type pinRef struct {
	n     int       // holds
	until time.Time // once n is 0: pinned until then (the linger)
}

// NewVersions returns the owner of the versions of o.Container. Call Run
// for leases and reaping, and Close when done.
func NewVersions(st ObjectStore, o VersionsOptions) *Versions {
	if o.SegmentContainer == "" {
		o.SegmentContainer = o.Container + "_segments"
	}
	if o.Host == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.Host = hex.EncodeToString(b[:])
	}
	o.Host = strings.NewReplacer("/", "_", "-", "_").Replace(o.Host)
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Linger <= 0 {
		o.Linger = min(DefaultLinger, o.Grace)
	}
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Versions{st: st, o: o, kick: make(chan struct{}, 1), pins: map[pin]*pinRef{}}
}

// Options returns the options in effect (defaults filled in).
func (v *Versions) Options() VersionsOptions { return v.o }

func (v *Versions) failpoint(name string) {
	if v.o.Failpoint != nil {
		v.o.Failpoint(name)
	}
}

// Version is what one version of an object references.
type Version struct {
	Info Info
	// Refs are the objects it references, by container (not the manifest
	// itself), with their ETags where known.
	Refs map[string][]ObjectRef
	// DLO is the container and prefix of a DLO manifest's parts.
	DLOContainer, DLOPrefix string
}

// ObjectRef is an object a version references.
type ObjectRef struct {
	Name string `json:"n"`
	ETag string `json:"e,omitempty"`
}

// Describe reads what the version in references.
func (v *Versions) Describe(ctx context.Context, in Info) (*Version, error) {
	ver := &Version{Info: in, Refs: map[string][]ObjectRef{}}
	switch {
	case in.SLO:
		groups, err := sloObjects(ctx, v.st, in.Container, in.Name, 0)
		if err != nil {
			return nil, err
		}
		for c, objs := range groups {
			for _, o := range objs {
				ver.Refs[c] = append(ver.Refs[c], ObjectRef{Name: o})
			}
		}
	case in.DLO != "":
		c, prefix, err := parseDLOManifest(in.DLO)
		if err != nil {
			return nil, err
		}
		ver.DLOContainer, ver.DLOPrefix = c, prefix
		segs, err := listDLO(ctx, v.st, in.DLO)
		if err != nil {
			return nil, err
		}
		for _, s := range segs {
			ver.Refs[s.Container] = append(ver.Refs[s.Container], ObjectRef{Name: s.Object, ETag: s.ETag})
		}
	}
	return ver, nil
}

// owned splits a version's references into those a retirement may delete
// and those it must keep (see the type's doc).
func (v *Versions) owned(ver *Version) (mine map[string][]ObjectRef, kept int, keptIn []string) {
	mine = map[string][]ObjectRef{}
	ownsDLOParts := ver.DLOContainer == v.o.Container && ownsPrefix(ver.Info.Name, ver.DLOPrefix)
	for c, refs := range ver.Refs {
		for _, r := range refs {
			ok := false
			switch {
			case !strings.HasPrefix(r.Name, v.o.Scope) || strings.HasPrefix(r.Name, reservedPrefix):
			case c == v.o.SegmentContainer:
				ok = true
			case c == v.o.Container:
				ok = ownsDLOParts && strings.HasPrefix(r.Name, ver.DLOPrefix) && r.ETag != ""
			}
			if ok {
				mine[c] = append(mine[c], r)
			} else {
				kept++
				if !contains(keptIn, c) {
					keptIn = append(keptIn, c)
				}
			}
		}
	}
	return mine, kept, keptIn
}

// ownsPrefix reports whether a DLO manifest named name owns the parts
// under prefix in its own container: Glance's layout, "<name>-…", and not
// a directory or anything else that holds other files.
func ownsPrefix(name, prefix string) bool {
	return len(prefix) > len(name) && strings.HasPrefix(prefix, name) && !strings.ContainsRune(prefix[len(name):], '/')
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// record is a retirement record, as stored.
type record struct {
	V       int                    `json:"v"`
	Host    string                 `json:"host"`
	Retired time.Time              `json:"retired"`
	Object  string                 `json:"object"`
	ETag    string                 `json:"etag"`
	Why     string                 `json:"why"`
	Objects map[string][]ObjectRef `json:"objects"`
}

// Retire records that the version in (the current one at in.Name) is
// being replaced or removed; call it before the change. why is logged and
// stored ("overwrite", "unlink", "rename-over"). Its objects are deleted
// by a later reap (see the type's doc); references it must never delete
// are left out of the record and logged.
func (v *Versions) Retire(ctx context.Context, in Info, why string) error {
	ver, err := v.Describe(ctx, in)
	if errors.Is(err, errManifest) {
		// Cyclic, too deep, too wide: nothing it references can be known,
		// so nothing is recorded; the name goes, anything left is gc's.
		v.o.Log.Warn("retiring a version whose manifest cannot be read; its references are left alone", "object", in.Name, "why", why, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("retire %s: read what it references: %w", in.Name, err)
	}
	mine, kept, keptIn := v.owned(ver)
	if kept > 0 {
		v.o.Log.Warn("removing a version whose references lie outside what it owns: those objects are kept",
			"object", in.Name, "why", why, "kept", kept, "containers", keptIn, "dlo", in.DLO)
	}
	if len(mine) == 0 {
		return nil // a plain object: nothing beyond the name itself
	}
	now := v.o.Now()
	rec := record{V: 1, Host: v.o.Host, Retired: now.UTC(), Object: in.Name, ETag: in.ETag, Why: why, Objects: mine}
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s%020d-%s-%s", recordPrefix, now.UnixNano(), v.o.Host, randomID()) // see recordName
	if err := v.putState(ctx, name, body); err != nil {
		return fmt.Errorf("retire %s: write the retirement record: %w", in.Name, err)
	}
	v.o.Log.Debug("version retired", "object", in.Name, "why", why, "record", name, "objects", countRefs(mine))
	return nil
}

// recordName reads the host and the retirement time from a record's name
// (<recordPrefix><unix nanoseconds, 20 digits>-<host>-<random>; hosts have
// no "-").
func recordName(name string) (host string, at time.Time, ok bool) {
	rest, found := strings.CutPrefix(name, recordPrefix)
	if !found || len(rest) < 22 || rest[20] != '-' {
		return "", time.Time{}, false
	}
	ns, err := strconv.ParseInt(rest[:20], 10, 64)
	if err != nil {
		return "", time.Time{}, false
	}
	host, _, found = strings.Cut(rest[21:], "-")
	return host, time.Unix(0, ns), found
}

func countRefs(m map[string][]ObjectRef) int {
	n := 0
	for _, r := range m {
		n += len(r)
	}
	return n
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// putState writes a state object, creating the segment container if it
// does not exist yet.
func (v *Versions) putState(ctx context.Context, name string, body []byte) error {
	put := func() error {
		_, err := v.st.Put(ctx, v.o.SegmentContainer, name, bytes.NewReader(body), int64(len(body)), "", PutOptions{ContentType: "application/json"})
		return err
	}
	err := put()
	if errors.Is(err, ErrNotFound) {
		if err = v.st.CreateContainer(ctx, v.o.SegmentContainer); err == nil {
			err = put()
		}
	}
	return err
}

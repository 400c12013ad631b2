package segments

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
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

// Hold pins objects for this host until Release.
type Hold struct {
	v      *Versions
	pins   []pin
	linger bool
	once   sync.Once
}

// Release ends the hold (a writer's or a rename's after the linger).
// Idempotent.
func (h *Hold) Release() {
	if h == nil {
		return
	}
	h.once.Do(func() { h.v.release(h.pins, h.linger) })
}

// pinsOf returns the pins that protect the objects of a manifest: the
// upload prefix of each imagefs segment, the directory of other segments,
// the object itself where there is no directory.
func pinsOf(m *Manifest) []pin {
	seen := map[pin]bool{}
	var out []pin
	for _, s := range m.Segments {
		p := uploadPin(s.Container, s.Object)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func uploadPin(c, o string) pin {
	prefix, _ := uploadOf(o)
	if !strings.HasSuffix(prefix, "/") {
		return pin{C: c, P: o, Exact: true}
	}
	return pin{C: c, P: prefix}
}

// Hold pins the objects of version m for this host (a reader). The lease
// is written in the background (soon, and long before any grace period
// ends: a version can only be retired after it was opened).
func (v *Versions) Hold(m *Manifest) *Hold {
	return v.hold(pinsOf(m), false)
}

// HoldBase is Hold for a writer that builds on m: the hold lingers after
// Release, until the listing shows the new manifest.
func (v *Versions) HoldBase(m *Manifest) *Hold {
	return v.hold(pinsOf(m), true)
}

// HoldPrefix pins every object of container c under prefix (an upload in
// progress; it lingers after Release like HoldBase).
func (v *Versions) HoldPrefix(c, prefix string) *Hold {
	return v.hold([]pin{{C: c, P: prefix}}, true)
}

// HoldNow is Hold, but returns only once the lease that says so is in
// Swift: for a change that makes a new reference to the objects (rename),
// which a reap running at the same moment must see.
func (v *Versions) HoldNow(ctx context.Context, m *Manifest) (*Hold, error) {
	h := v.hold(pinsOf(m), true)
	if err := v.writeLease(ctx); err != nil {
		h.Release()
		return nil, fmt.Errorf("write the lease of host %s: %w", v.o.Host, err)
	}
	return h, nil
}

func (v *Versions) hold(pins []pin, linger bool) *Hold {
	v.mu.Lock()
	added := false
	for _, p := range pins {
		r := v.pins[p]
		if r == nil {
			r = &pinRef{}
			v.pins[p] = r
			added = true
		}
		r.n++
	}
	v.mu.Unlock()
	if added {
		select {
		case v.kick <- struct{}{}:
		default:
		}
	}
	return &Hold{v: v, pins: pins, linger: linger}
}

func (v *Versions) release(pins []pin, linger bool) {
	until := v.o.Now()
	if linger {
		until = until.Add(v.o.Linger)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, p := range pins {
		if r := v.pins[p]; r != nil {
			r.n--
			if r.n <= 0 {
				r.n = 0
				if until.After(r.until) {
					r.until = until
				}
			}
		}
	}
	if !linger {
		select { // the lease can say less now
		case v.kick <- struct{}{}:
		default:
		}
	}
}

// localPins returns what this host pins now (lingering pins included).
func (v *Versions) localPins() []pin {
	now := v.o.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]pin, 0, len(v.pins))
	for p, r := range v.pins {
		if r.n > 0 || now.Before(r.until) {
			out = append(out, p)
		}
	}
	return out
}

// Holding reports how many pins this host's lease has.
func (v *Versions) Holding() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.pins)
}

// lease is a host's lease, as stored.
type lease struct {
	V       int       `json:"v"`
	Host    string    `json:"host"`
	Written time.Time `json:"written"`
	TTL     float64   `json:"ttl_s"`
	Pins    []pin     `json:"pins"`
}

// writeLease writes this host's lease with what it pins now, dropping the
// released pins whose linger is over; with nothing pinned it removes the
// lease.
func (v *Versions) writeLease(ctx context.Context) error {
	v.leaseMu.Lock()
	defer v.leaseMu.Unlock()
	now := v.o.Now()
	v.mu.Lock()
	var pins []pin
	for p, r := range v.pins {
		if r.n == 0 && !now.Before(r.until) {
			delete(v.pins, p)
			continue
		}
		pins = append(pins, p)
	}
	stored := v.stored
	v.mu.Unlock()
	if len(pins) == 0 && !stored {
		return nil
	}
	sort.Slice(pins, func(i, j int) bool { return pins[i].C+pins[i].P < pins[j].C+pins[j].P })
	name := leasePrefix + v.o.Host
	var err error
	if len(pins) == 0 {
		err = v.st.Delete(ctx, v.o.SegmentContainer, name)
		if errors.Is(err, ErrNotFound) {
			err = nil
		}
	} else {
		body, _ := json.Marshal(lease{V: 1, Host: v.o.Host, Written: now.UTC(), TTL: v.o.LeaseTTL.Seconds(), Pins: pins})
		err = v.putState(ctx, name, body)
	}
	v.mu.Lock()
	v.writeErr = err
	if err == nil {
		v.written, v.stored = now, len(pins) > 0
	}
	v.mu.Unlock()
	return err
}

// Run keeps this host's lease fresh and, with ReapInterval, reaps this
// host's due retirements, until ctx ends.
func (v *Versions) Run(ctx context.Context) error {
	refresh := time.NewTicker(v.o.LeaseTTL / 3)
	defer refresh.Stop()
	var reap <-chan time.Time
	if v.o.ReapInterval > 0 {
		t := time.NewTicker(v.o.ReapInterval)
		defer t.Stop()
		reap = t.C
	}
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-v.kick:
		case <-refresh.C:
		case <-reap:
			if _, err := v.Reap(ctx, ReapOptions{MinAge: v.o.Grace, OnlyHost: v.o.Host, Delete: true}); err != nil && ctx.Err() == nil {
				v.o.Log.Warn("reaping retired versions failed; will try again", "err", err)
			}
			continue
		}
		err := v.writeLease(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			v.o.Log.Warn("could not write this host's lease; open versions are protected by the grace period only until it works again", "host", v.o.Host, "err", err)
		case err == nil && failing:
			failing = false
			v.o.Log.Info("lease written again", "host", v.o.Host)
		}
	}
}

// Close removes this host's lease (nothing it serves is open any more).
func (v *Versions) Close(ctx context.Context) error {
	v.mu.Lock()
	clear(v.pins)
	v.mu.Unlock()
	return v.writeLease(ctx)
}

// ReapOptions configure Reap.
type ReapOptions struct {
	MinAge   time.Duration // records younger than this are not due
	OnlyHost string        // reap only this host's records ("" = all)
	Delete   bool          // without it, only report
}

// ReapReport is what Reap found and did.
type ReapReport struct {
	Records, Due       int // retirement records seen, and due
	Done               int // due records finished (removed)
	Deleted            int // objects deleted
	Referenced, Pinned int // objects spared: referenced by a live manifest, pinned by a lease
	Leases, LiveLeases int
	DeadLeasesRemoved  int
	Waiting            []RecordSummary // records not due yet
	DueRecords         []RecordSummary
	retiredObjects     map[string]bool // container + "\x00" + name of every recorded object
	livePins           []pin
}

// RecordSummary describes one retirement record.
type RecordSummary struct {
	Name, Object, Why, Host string
	Retired                 time.Time
	Objects                 int
}

// Protected reports whether gc must leave an object alone because a
// retirement record lists it (it is reaped by its record) or a live lease
// pins it.
func (r *ReapReport) Protected(c, o string) bool {
	if r == nil {
		return false
	}
	if r.retiredObjects[c+"\x00"+o] {
		return true
	}
	for _, p := range r.livePins {
		if p.covers(c, o) {
			return true
		}
	}
	return false
}

// Reap deletes the objects of due retirement records that no live
// manifest references and no live lease pins (see the type's doc). Any
// error reading a manifest or a lease stops it before it deletes anything.
func (v *Versions) Reap(ctx context.Context, ro ReapOptions) (*ReapReport, error) {
	rep := &ReapReport{retiredObjects: map[string]bool{}}
	now := v.o.Now()
	type due struct {
		name string
		rec  record
	}
	var dues []due
	var names []string
	err := v.st.List(ctx, v.o.SegmentContainer, recordPrefix, 0, func(in Info) error {
		names = append(names, in.Name)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return rep, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list retirement records: %w", err)
	}
	for _, name := range names {
		if ro.OnlyHost != "" {
			// A mount's own reap reads only its own due records: the name
			// says whose and when.
			if host, at, ok := recordName(name); ok && (host != ro.OnlyHost || now.Sub(at) < ro.MinAge) {
				continue
			}
		}
		rec, err := v.readRecord(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue // reaped meanwhile by another host
		}
		if err != nil {
			return nil, err
		}
		rep.Records++
		for c, refs := range rec.Objects {
			for _, r := range refs {
				rep.retiredObjects[c+"\x00"+r.Name] = true
			}
		}
		sum := RecordSummary{Name: name, Object: rec.Object, Why: rec.Why, Host: rec.Host, Retired: rec.Retired, Objects: countRefs(rec.Objects)}
		if now.Sub(rec.Retired) < ro.MinAge || (ro.OnlyHost != "" && rec.Host != ro.OnlyHost) {
			rep.Waiting = append(rep.Waiting, sum)
			continue
		}
		rep.Due++
		rep.DueRecords = append(rep.DueRecords, sum)
		dues = append(dues, due{name, rec})
	}
	leases, err := v.readLeases(ctx, rep)
	if err != nil {
		return nil, err
	}
	rep.livePins = append(leases, v.localPins()...)
	if len(dues) == 0 {
		return rep, nil
	}
	// What every name references now, read after the records: a
	// reference made since is either seen here or pinned (read below).
	scan, err := scanReferences(ctx, v.st, v.o.Container, v.o.Parallel)
	if err != nil {
		return nil, err
	}
	v.failpoint("reap-after-scan")
	// The leases again, now that the scan is over: a rename that copied a
	// manifest during the scan pinned its objects before it did.
	if leases, err = v.readLeases(ctx, rep); err != nil {
		return nil, err
	}
	leases = append(leases, v.localPins()...) // not in Swift yet, maybe
	rep.livePins = leases
	for _, d := range dues {
		doomed := map[string][]string{}
		pinned := false
		for c, refs := range d.rec.Objects {
			for _, r := range refs {
				switch {
				case !v.mayDelete(c, r.Name):
					rep.Referenced++ // out of scope: never ours to delete
				case scan.refs[c+"\x00"+r.Name]:
					rep.Referenced++
				case pinnedBy(leases, c, r.Name):
					rep.Pinned++
					pinned = true
				case c == v.o.Container:
					// A DLO part next to its manifest: only the very
					// object recorded, and only if nothing uses it now.
					cur, ok := scan.objects[r.Name]
					if ok && cur.ETag == r.ETag && !scan.manifests[r.Name] {
						doomed[c] = append(doomed[c], r.Name)
					}
				default:
					doomed[c] = append(doomed[c], r.Name)
				}
			}
		}
		if !ro.Delete {
			continue
		}
		if err := deleteGroupsNamed(ctx, v.st, doomed); err != nil {
			return rep, fmt.Errorf("reap %s: %w", d.rec.Object, err)
		}
		rep.Deleted += countNames(doomed)
		v.failpoint("reap-after-delete")
		if pinned {
			continue // again later, once the lease lets go
		}
		if err := v.st.Delete(ctx, v.o.SegmentContainer, d.name); err != nil && !errors.Is(err, ErrNotFound) {
			return rep, fmt.Errorf("remove retirement record %s: %w", d.name, err)
		}
		rep.Done++
	}
	if ro.Delete && rep.Deleted > 0 {
		v.o.Log.Info("retired versions reaped", "records", rep.Done, "objects", rep.Deleted,
			"spared_referenced", rep.Referenced, "spared_pinned", rep.Pinned)
	}
	return rep, nil
}

func countNames(m map[string][]string) int {
	n := 0
	for _, s := range m {
		n += len(s)
	}
	return n
}

func deleteGroupsNamed(ctx context.Context, st ObjectStore, groups map[string][]string) error {
	for c, objs := range groups {
		if len(objs) == 0 {
			continue
		}
		if err := st.DeleteMany(ctx, c, objs); err != nil {
			return fmt.Errorf("delete in %s: %w", c, err)
		}
	}
	return nil
}

// mayDelete is the last guard of every delete of a reap or gc: the
// object lies in the mount's containers, below its scope, outside the
// state.
func (v *Versions) mayDelete(c, o string) bool {
	if c != v.o.SegmentContainer && c != v.o.Container {
		return false
	}
	return strings.HasPrefix(o, v.o.Scope) && !strings.HasPrefix(o, reservedPrefix)
}

func pinnedBy(pins []pin, c, o string) bool {
	for _, p := range pins {
		if p.covers(c, o) {
			return true
		}
	}
	return false
}

func (v *Versions) readRecord(ctx context.Context, name string) (record, error) {
	var rec record
	b, err := v.getState(ctx, name)
	if err != nil {
		return rec, err
	}
	rec, err = parseRecord(b)
	if err != nil {
		return rec, fmt.Errorf("retirement record %s/%s is not readable (%v): nothing is reaped until it is fixed or removed", v.o.SegmentContainer, name, err)
	}
	return rec, nil
}

// parseRecord decodes a retirement record.
func parseRecord(b []byte) (record, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return record{}, err
	}
	if rec.V != 1 || rec.Retired.IsZero() {
		return record{}, fmt.Errorf("version %d, retired %v: not a record of this imagefs", rec.V, rec.Retired)
	}
	for c, refs := range rec.Objects {
		if c == "" {
			return record{}, errors.New("an object without a container")
		}
		for _, r := range refs {
			if r.Name == "" {
				return record{}, errors.New("an object without a name")
			}
		}
	}
	return rec, nil
}

// maxLeaseTTL bounds what a lease may claim: a longer TTL (a bug, or a
// lease written by hand) would protect its pins for ever.
const maxLeaseTTL = 7 * 24 * time.Hour

// parseLease decodes a lease; ttl is its validity (fallback when it names
// none that makes sense).
func parseLease(b []byte, fallback time.Duration) (lease, time.Duration, error) {
	var l lease
	if err := json.Unmarshal(b, &l); err != nil {
		return lease{}, 0, err
	}
	if l.V != 1 {
		return lease{}, 0, fmt.Errorf("version %d: not a lease of this imagefs", l.V)
	}
	for _, p := range l.Pins {
		if p.C == "" {
			return lease{}, 0, errors.New("a pin without a container")
		}
	}
	ttl := fallback
	if l.TTL > 0 && l.TTL <= maxLeaseTTL.Seconds() { // false for NaN too
		ttl = time.Duration(l.TTL * float64(time.Second))
	}
	return l, ttl, nil
}

// maxStateSize bounds a state object read (a record of a 2 TiB image is
// ~4 MiB).
const maxStateSize = 64 << 20

func (v *Versions) getState(ctx context.Context, name string) ([]byte, error) {
	rc, err := v.st.Get(ctx, v.o.SegmentContainer, name, 0, -1, "")
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxStateSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxStateSize {
		return nil, fmt.Errorf("%s/%s: larger than %d bytes", v.o.SegmentContainer, name, maxStateSize)
	}
	return b, nil
}

// deadLeaseAge: a lease not refreshed for this many TTLs belongs to a
// process that is gone; reaps remove it.
const deadLeaseAge = 10

// readLeases returns the pins of every live lease, and removes leases
// long dead.
func (v *Versions) readLeases(ctx context.Context, rep *ReapReport) ([]pin, error) {
	var infos []Info
	err := v.st.List(ctx, v.o.SegmentContainer, leasePrefix, 0, func(in Info) error {
		infos = append(infos, in)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	now := v.o.Now()
	rep.Leases, rep.LiveLeases = len(infos), 0
	var pins []pin
	for _, in := range infos {
		b, err := v.getState(ctx, in.Name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read lease %s: %w", in.Name, err)
		}
		l, ttl, err := parseLease(b, v.o.LeaseTTL)
		if err != nil {
			return nil, fmt.Errorf("lease %s/%s is not readable (%v): nothing is reaped until it is fixed or removed", v.o.SegmentContainer, in.Name, err)
		}
		fresh := l.Written
		if in.LastModified.After(fresh) {
			fresh = in.LastModified
		}
		if now.Sub(fresh) < ttl {
			rep.LiveLeases++
			pins = append(pins, l.Pins...)
			continue
		}
		if now.Sub(fresh) > deadLeaseAge*ttl {
			if err := v.st.Delete(ctx, v.o.SegmentContainer, in.Name); err == nil {
				rep.DeadLeasesRemoved++
			}
		}
	}
	return pins, nil
}

// LeaseWritten reports when this host's lease was last written and the
// last write's error.
func (v *Versions) LeaseWritten() (time.Time, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.written, v.writeErr
}

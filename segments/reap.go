package segments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Reaping: the retired versions whose grace is over, minus what is
// referenced or held.

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
	dues, err := v.dueRecords(ctx, ro, rep)
	if err != nil {
		return nil, err
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
	rep.livePins = append(leases, v.localPins()...) // not in Swift yet, maybe
	for _, d := range dues {
		doomed, pinned := v.doomed(d.rec, scan, rep)
		if !ro.Delete {
			continue
		}
		if err := v.reapRecord(ctx, d, doomed, pinned, rep); err != nil {
			return rep, err
		}
	}
	if ro.Delete && rep.Deleted > 0 {
		v.o.Log.Info("retired versions reaped", "records", rep.Done, "objects", rep.Deleted,
			"spared_referenced", rep.Referenced, "spared_pinned", rep.Pinned)
	}
	return rep, nil
}

// dueRecord is a retirement record whose grace is over.
type dueRecord struct {
	name string
	rec  record
}

// dueRecords reads the retirement records (a mount's own reap only its
// own due ones) into rep and returns those due.
func (v *Versions) dueRecords(ctx context.Context, ro ReapOptions, rep *ReapReport) ([]dueRecord, error) {
	now := v.o.Now()
	var names []string
	err := v.st.List(ctx, v.o.SegmentContainer, recordPrefix, 0, func(in Info) error {
		names = append(names, in.Name)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list retirement records: %w", err)
	}
	var dues []dueRecord
	for _, name := range names {
		if ro.OnlyHost != "" {
			// The name says whose and when.
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
		dues = append(dues, dueRecord{name, rec})
	}
	return dues, nil
}

// doomed picks the objects of rec that may go now: in scope, referenced
// by no manifest, pinned by no lease (then pinned is true), and for a DLO
// part next to its manifest only the very object recorded.
func (v *Versions) doomed(rec record, scan *scan, rep *ReapReport) (doomed map[string][]string, pinned bool) {
	doomed = map[string][]string{}
	for c, refs := range rec.Objects {
		for _, r := range refs {
			switch {
			case !v.mayDelete(c, r.Name):
				rep.Referenced++ // out of scope: never ours to delete
			case scan.refs[c+"\x00"+r.Name]:
				rep.Referenced++
			case pinnedBy(rep.livePins, c, r.Name):
				rep.Pinned++
				pinned = true
			case c == v.o.Container:
				cur, ok := scan.objects[r.Name]
				if ok && cur.ETag == r.ETag && !scan.manifests[r.Name] {
					doomed[c] = append(doomed[c], r.Name)
				}
			default:
				doomed[c] = append(doomed[c], r.Name)
			}
		}
	}
	return doomed, pinned
}

// reapRecord deletes the doomed objects of d, then the record itself
// unless something it lists is still pinned (it is tried again later).
func (v *Versions) reapRecord(ctx context.Context, d dueRecord, doomed map[string][]string, pinned bool, rep *ReapReport) error {
	if err := deleteGroupsNamed(ctx, v.st, doomed); err != nil {
		return fmt.Errorf("reap %s: %w", d.rec.Object, err)
	}
	rep.Deleted += countNames(doomed)
	v.failpoint("reap-after-delete")
	if pinned {
		return nil
	}
	if err := v.st.Delete(ctx, v.o.SegmentContainer, d.name); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("remove retirement record %s: %w", d.name, err)
	}
	rep.Done++
	return nil
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

package segments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Boot traces: the byte ranges a first open of a version read in its
// first seconds (a VM booting), in the order it read them, stored so that
// later opens on any host can fetch them before the guest asks.
//
// A trace is a state object of the segment container, like leases and
// retirement records:
//
//	.imagefs/traces/<object name>/<version key>
//
// Keyed by the version key (Manifest.Version), so a changed image never
// finds the trace of its previous content; in the segment container under
// the reserved prefix, so that it never shows in the mount's listings, gc
// never counts it as an orphan segment and a delete of a version never
// reaches it; beside the image's own name, so that PruneTraces finds the
// traces of versions that are gone with one listing.

const tracePrefix = reservedPrefix + "traces/"

// keepTraces marks, in PruneTraces, an object whose traces are all kept.
const keepTraces = "\x00keep"

// Bounds of a trace: a boot reads tens to a few hundred MiB, in a few
// thousand places at most.
const (
	MaxTraceExtents = 2048
	MaxTraceBytes   = 512 << 20 // bytes of the image a trace may name
	maxTraceObject  = 96 << 10  // bytes of the encoded trace
)

// Trace is a boot trace: extents of one version, in first-read order.
type Trace struct {
	Version string   `json:"version"`
	Extents []Extent `json:"extents"`
}

// Extent is a byte range of an image.
type Extent struct {
	Off int64 `json:"o"`
	Len int64 `json:"n"`
}

// Bytes is the number of bytes the trace names.
func (t *Trace) Bytes() int64 {
	var n int64
	for _, e := range t.Extents {
		n += e.Len
	}
	return n
}

// TraceName is the name of the trace of version key of object in the
// segment container.
func TraceName(object, key string) string { return tracePrefix + object + "/" + key }

// traceOf splits a trace's name into the object and the version key.
func traceOf(name string) (object, key string, ok bool) {
	rest, found := strings.CutPrefix(name, tracePrefix)
	if !found {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// ErrBadTrace: a trace object that is not one, or is too large.
var ErrBadTrace = errors.New("bad boot trace")

// ParseTrace decodes a trace and checks it against its bounds and against
// the version it must be of (size is that version's size).
func ParseTrace(b []byte, key string, size int64) (*Trace, error) {
	if len(b) > maxTraceObject {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrBadTrace, len(b), maxTraceObject)
	}
	var t Trace
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadTrace, err)
	}
	if t.Version != key {
		return nil, fmt.Errorf("%w: of another version", ErrBadTrace)
	}
	if len(t.Extents) > MaxTraceExtents {
		return nil, fmt.Errorf("%w: %d extents, more than %d", ErrBadTrace, len(t.Extents), MaxTraceExtents)
	}
	var total int64
	for _, e := range t.Extents {
		if e.Off < 0 || e.Len <= 0 || e.Len > size || e.Off > size-e.Len {
			return nil, fmt.Errorf("%w: extent [%d, +%d) outside the image of %d bytes", ErrBadTrace, e.Off, e.Len, size)
		}
		if total += e.Len; total > MaxTraceBytes {
			return nil, fmt.Errorf("%w: names more than %d bytes", ErrBadTrace, int64(MaxTraceBytes))
		}
	}
	return &t, nil
}

// PutTrace stores the trace of version t.Version of object.
func (v *Versions) PutTrace(ctx context.Context, object string, t *Trace) error {
	body, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if len(body) > maxTraceObject {
		return fmt.Errorf("boot trace of %s: %d bytes, more than %d", object, len(body), maxTraceObject)
	}
	return v.putState(ctx, TraceName(object, t.Version), body)
}

// GetTrace reads the trace of version key (of size bytes) of object:
// ErrNotFound if there is none, ErrBadTrace if it does not pass
// ParseTrace.
func (v *Versions) GetTrace(ctx context.Context, object, key string, size int64) (*Trace, error) {
	rc, err := v.st.Get(ctx, v.o.SegmentContainer, TraceName(object, key), 0, -1, "")
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxTraceObject+1))
	if err != nil {
		return nil, err
	}
	return ParseTrace(b, key, size)
}

// PruneTraces deletes the traces (of objects within the scope) whose
// version is not the object's current one: the object is gone or has
// changed. With dryRun it only counts them. A trace whose object cannot be
// read for another reason is kept.
func (v *Versions) PruneTraces(ctx context.Context, dryRun bool) (stale int, err error) {
	var names []string
	err = v.st.List(ctx, v.o.SegmentContainer, tracePrefix+v.o.Scope, 0, func(in Info) error {
		names = append(names, in.Name)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return 0, nil // no segment container: no traces
	}
	if err != nil {
		return 0, fmt.Errorf("list boot traces: %w", err)
	}
	current := map[string]string{} // object -> version key now ("" if gone)
	var doomed []string
	for _, n := range names {
		object, key, ok := traceOf(n)
		if !ok || !strings.HasPrefix(object, v.o.Scope) {
			continue
		}
		now, seen := current[object]
		if !seen {
			m, _, err := Resolve(ctx, v.st, v.o.Container, object)
			switch {
			case err == nil:
				now = m.Version
			case errors.Is(err, ErrNotFound):
			default:
				v.o.Log.Warn("keeping the boot traces of an object that cannot be read", "object", object, "err", err)
				now = keepTraces
			}
			current[object] = now
		}
		if now == keepTraces || now == key {
			continue
		}
		doomed = append(doomed, n)
	}
	if dryRun || len(doomed) == 0 {
		return len(doomed), nil
	}
	if err := v.st.DeleteMany(ctx, v.o.SegmentContainer, doomed); err != nil {
		return 0, fmt.Errorf("delete stale boot traces: %w", err)
	}
	return len(doomed), nil
}

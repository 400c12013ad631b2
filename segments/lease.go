package segments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Holds and leases: what this host has open, kept in its lease in Swift.

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

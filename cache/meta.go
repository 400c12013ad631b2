package cache

import (
	"sync"
	"time"
)

// Meta is a small TTL cache of metadata lookups, negative answers included,
// so that a burst of lookups of one name (stat, open, getattr) costs one
// request, and the entries of a directory listing answer the lookups that
// follow it. It is safe for concurrent use. The clock is injectable.
//
// Forget is honest against answers in flight: an answer read before a
// Forget of its key (a listing page fetched before this mount's own
// commit, rename or delete) is not cached after it (PutAt with a Mark
// taken before the request). An entry's age counts from its Mark, when
// the request began, not from when it was cached.
//
// The cache holds at most Max entries (expired ones go first, then any);
// it is a cache, so a dropped entry costs one request later.
type Meta[K comparable, V any] struct {
	TTL time.Duration
	Now func() time.Time // default time.Now
	Max int              // entries; default DefaultMetaMax

	mu      sync.Mutex // guards m, gen, longest
	m       map[K]metaEntry[V]
	gen     uint64        // counts Forgets
	longest time.Duration // the longest ttl PutAt was given
}

// DefaultMetaMax is the default of Meta.Max.
const DefaultMetaMax = 200_000

type metaEntry[V any] struct {
	v       V
	ok      bool // false: a cached "does not exist"
	tomb    bool // a Forget: no value, only its gen
	gen     uint64
	expires time.Time
}

// Mark is a point in a Meta's history: when a request began.
type Mark struct {
	gen uint64
	at  time.Time
}

// NewMeta returns a cache whose entries live for ttl.
func NewMeta[K comparable, V any](ttl time.Duration) *Meta[K, V] {
	return &Meta[K, V]{TTL: ttl, Now: time.Now, m: map[K]metaEntry[V]{}}
}

// Mark returns the present point, to take before a request whose answer
// goes to PutAt.
func (c *Meta[K, V]) Mark() Mark {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Mark{gen: c.gen, at: c.Now()}
}

// Get returns the cached value for k. found reports whether k is cached
// at all; exists whether the cached answer was positive.
func (c *Meta[K, V]) Get(k K) (v V, exists, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || e.tomb {
		return v, false, false
	}
	if !c.Now().Before(e.expires) {
		delete(c.m, k)
		return v, false, false
	}
	return e.v, e.ok, true
}

// Put caches a positive answer read just now.
func (c *Meta[K, V]) Put(k K, v V) { c.PutAt(k, v, true, c.Mark(), c.TTL) }

// PutMissing caches a negative answer read just now.
func (c *Meta[K, V]) PutMissing(k K) {
	var zero V
	c.PutAt(k, zero, false, c.Mark(), c.TTL)
}

// PutAt caches an answer (ok: positive) of a request that began at m, for
// ttl from m. It is dropped if k was forgotten since m, or if it has
// expired already.
func (c *Meta[K, V]) PutAt(k K, v V, ok bool, m Mark, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.Now()
	expires := m.at.Add(ttl)
	if !now.Before(expires) {
		return
	}
	if e, found := c.m[k]; found && e.tomb && e.gen > m.gen && now.Before(e.expires) {
		return // forgotten after the request began
	}
	c.longest = max(c.longest, ttl)
	c.makeRoomLocked(now)
	c.m[k] = metaEntry[V]{v: v, ok: ok, gen: m.gen, expires: expires}
}

// Forget drops k, and any answer about k still in flight (PutAt).
func (c *Meta[K, V]) Forget(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if c.maxTTL() <= 0 {
		delete(c.m, k)
		return
	}
	// The tombstone lives as long as any answer read before it could:
	// an answer's life counts from its Mark, which is before now.
	now := c.Now()
	c.makeRoomLocked(now)
	c.m[k] = metaEntry[V]{tomb: true, gen: c.gen, expires: now.Add(c.maxTTL())}
}

// maxTTL is the longest life PutAt gives: TTL, or longer for a caller's
// own ttl (listings); tombstones must outlive them.
func (c *Meta[K, V]) maxTTL() time.Duration { return max(c.TTL, c.longest) }

// makeRoomLocked keeps the cache under Max. Called with c.mu held.
func (c *Meta[K, V]) makeRoomLocked(now time.Time) {
	limit := c.Max
	if limit <= 0 {
		limit = DefaultMetaMax
	}
	if len(c.m) < limit {
		return
	}
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	for k, e := range c.m {
		if len(c.m) < limit*9/10 {
			break
		}
		if !e.tomb { // tombstones keep Forget honest; they expire soon
			delete(c.m, k) // map order: as good as random
		}
	}
}

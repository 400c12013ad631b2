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
// commit, rename or delete) is not cached after it (PutAt with the time
// its request began). An entry's age counts from that time, not from
// when it was cached.
//
// The cache holds at most Max entries (expired ones go first, then any);
// it is a cache, so a dropped entry costs one request later.
type Meta[K comparable, V any] struct {
	TTL time.Duration
	Now func() time.Time // default time.Now
	Max int              // entries; default DefaultMetaMax

	mu      sync.Mutex // guards m, longest
	m       map[K]metaEntry[V]
	longest time.Duration // the longest ttl PutAt was given
}

// DefaultMetaMax is the default of Meta.Max.
const DefaultMetaMax = 200_000

type metaEntry[V any] struct {
	v       V
	ok      bool      // false: a cached "does not exist"
	tomb    bool      // a Forget: no value
	at      time.Time // when the answer's request began, or of the Forget
	expires time.Time
}

// NewMeta returns a cache whose entries live for ttl.
func NewMeta[K comparable, V any](ttl time.Duration) *Meta[K, V] {
	return &Meta[K, V]{TTL: ttl, Now: time.Now, m: map[K]metaEntry[V]{}}
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
func (c *Meta[K, V]) Put(k K, v V) { c.PutAt(k, v, true, c.Now(), c.TTL) }

// PutMissing caches a negative answer read just now.
func (c *Meta[K, V]) PutMissing(k K) {
	var zero V
	c.PutAt(k, zero, false, c.Now(), c.TTL)
}

// PutAt caches an answer (ok: positive) of a request that began at
// asked, for ttl from then. It is dropped if k was forgotten since, or if
// it has expired already. asked must come from the same clock as Now.
func (c *Meta[K, V]) PutAt(k K, v V, ok bool, asked time.Time, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.Now()
	expires := asked.Add(ttl)
	if !now.Before(expires) {
		return
	}
	if e, found := c.m[k]; found && e.tomb && !asked.After(e.at) && now.Before(e.expires) {
		return // forgotten after the request began
	}
	c.longest = max(c.longest, ttl)
	c.makeRoomLocked(now)
	c.m[k] = metaEntry[V]{v: v, ok: ok, at: asked, expires: expires}
}

// Forget drops k, and any answer about k still in flight (PutAt).
func (c *Meta[K, V]) Forget(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.maxTTL() <= 0 {
		delete(c.m, k)
		return
	}
	// The tombstone lives as long as any answer read before it could:
	// an answer's life counts from its request, which is before now.
	now := c.Now()
	c.makeRoomLocked(now)
	c.m[k] = metaEntry[V]{tomb: true, at: now, expires: now.Add(c.maxTTL())}
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

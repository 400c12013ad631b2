package cache

import (
	"sync"
	"time"
)

// Meta is a small TTL cache of metadata lookups, negative answers included,
// so that a burst of lookups of one name (stat, open, getattr) costs one
// request. It is safe for concurrent use. The clock is injectable.
type Meta[K comparable, V any] struct {
	TTL time.Duration
	Now func() time.Time // default time.Now

	mu sync.Mutex // guards m
	m  map[K]metaEntry[V]
}

type metaEntry[V any] struct {
	v       V
	ok      bool // false: a cached "does not exist"
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
	if !ok {
		return v, false, false
	}
	if !c.Now().Before(e.expires) {
		delete(c.m, k)
		return v, false, false
	}
	return e.v, e.ok, true
}

// Put caches a positive answer.
func (c *Meta[K, V]) Put(k K, v V) { c.put(k, v, true) }

// PutMissing caches a negative answer.
func (c *Meta[K, V]) PutMissing(k K) {
	var zero V
	c.put(k, zero, false)
}

func (c *Meta[K, V]) put(k K, v V, ok bool) {
	if c.TTL <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > 100000 {
		c.sweepLocked()
	}
	c.m[k] = metaEntry[V]{v: v, ok: ok, expires: c.Now().Add(c.TTL)}
}

// Forget drops k.
func (c *Meta[K, V]) Forget(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

// sweepLocked drops expired entries. Called with c.mu held.
func (c *Meta[K, V]) sweepLocked() {
	now := c.Now()
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
}

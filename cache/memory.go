package cache

// memory is the memory tier: the blocks held in memory by key, least
// recently used first to go, within a byte limit that also counts the
// blocks being fetched (reserved). A reservation always succeeds and
// evicts cached blocks to make room; refusing a fetch (a prefetch that
// does not fit) is for the caller to decide, with fits. It calls nothing
// else in the package; Blocks.mu guards it.
type memory struct {
	limit    int64 // Options.Memory
	blocks   lru[bkey, *buffer]
	reserved int64         // bytes of blocks being fetched
	evicted  func(*buffer) // called with each block dropped
}

// get returns a cached block and makes it the most recently used; nil if
// it is not in memory.
func (m *memory) get(k bkey) *buffer {
	if v := m.blocks.get(k); v != nil {
		return *v
	}
	return nil
}

// peek returns a cached block, leaving its recency alone.
func (m *memory) peek(k bkey) *buffer {
	if v := m.blocks.peek(k); v != nil {
		return *v
	}
	return nil
}

func (m *memory) has(k bkey) bool { return m.blocks.peek(k) != nil }

// put caches a block, the most recently used, and evicts what no longer
// fits. A block cached already is only used (its bytes are the same): buf
// is then not cached.
func (m *memory) put(k bkey, buf *buffer) {
	if m.blocks.get(k) != nil {
		return
	}
	buf.cached = true
	m.blocks.put(k, buf, int64(len(buf.data)))
	m.evict()
}

// reserve counts n more bytes of blocks being fetched and evicts what no
// longer fits; release uncounts them when the fetch of a block ends.
func (m *memory) reserve(n int64) {
	m.reserved += n
	m.evict()
}

func (m *memory) release(n int64) { m.reserved -= n }

// fits reports whether n more bytes of blocks being fetched stay within
// the limit (cached blocks can always be evicted for them).
func (m *memory) fits(n int64) bool { return m.reserved+n <= m.limit }

// cached is the bytes of the cached blocks.
func (m *memory) cached() int64 { return m.blocks.bytes }

// evict drops the least recently used blocks until the cached and the
// reserved bytes fit in the limit.
func (m *memory) evict() {
	m.blocks.trim(m.limit-m.reserved, func(_ bkey, buf *buffer) { m.evicted(buf) })
}

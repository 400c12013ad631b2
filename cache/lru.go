package cache

import "container/list"

// lru is an index of sized entries, least recently used first to go: the
// bookkeeping both tiers share. It counts the bytes of its entries and
// drops the oldest to a limit (trim); what an entry's bytes are and where
// they live is its owner's business. The zero value is empty and ready.
// It is not safe for concurrent use: its owner's mutex guards it.
type lru[K comparable, V any] struct {
	index map[K]*list.Element // of *lruEntry[K, V]
	order list.List           // most recent first
	bytes int64               // sum of the entries' sizes
}

type lruEntry[K comparable, V any] struct {
	key  K
	val  V
	size int64
}

// get returns k's value, in place (the pointer stays valid while k is
// in), and makes k the most recently used; nil if k is not in.
func (l *lru[K, V]) get(k K) *V {
	el := l.index[k]
	if el == nil {
		return nil
	}
	l.order.MoveToFront(el)
	return &el.Value.(*lruEntry[K, V]).val
}

// peek is get without the use: k's recency stays as it was.
func (l *lru[K, V]) peek(k K) *V {
	el := l.index[k]
	if el == nil {
		return nil
	}
	return &el.Value.(*lruEntry[K, V]).val
}

// put sets k to v of size bytes, the most recently used entry, replacing
// what k held.
func (l *lru[K, V]) put(k K, v V, size int64) {
	if el := l.index[k]; el != nil {
		e := el.Value.(*lruEntry[K, V])
		l.bytes += size - e.size
		e.val, e.size = v, size
		l.order.MoveToFront(el)
		return
	}
	if l.index == nil {
		l.index = map[K]*list.Element{}
	}
	l.index[k] = l.order.PushFront(&lruEntry[K, V]{key: k, val: v, size: size})
	l.bytes += size
}

// remove drops k, if it is in.
func (l *lru[K, V]) remove(k K) {
	if el := l.index[k]; el != nil {
		l.drop(el)
	}
}

// trim drops the least recently used entries until the rest fit in limit
// bytes (all of them if limit < 0), and calls dropped, if not nil, with
// each entry it dropped.
func (l *lru[K, V]) trim(limit int64, dropped func(K, V)) {
	for l.bytes > limit {
		el := l.order.Back()
		if el == nil {
			return
		}
		v := el.Value.(*lruEntry[K, V]).val
		k := l.drop(el)
		if dropped != nil {
			dropped(k, v)
		}
	}
}

func (l *lru[K, V]) drop(el *list.Element) K {
	e := l.order.Remove(el).(*lruEntry[K, V])
	delete(l.index, e.key)
	l.bytes -= e.size
	return e.key
}

// len is the number of entries.
func (l *lru[K, V]) len() int { return len(l.index) }

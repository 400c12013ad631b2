package cache

import "container/list"

type memBlock struct {
	k    bkey
	data []byte
	elem *list.Element
}

// insertLocked puts a block in the memory LRU and evicts what no longer fits.
func (b *Blocks) insertLocked(k bkey, data []byte) {
	if mb := b.mem[k]; mb != nil {
		b.lru.MoveToFront(mb.elem)
		return
	}
	mb := &memBlock{k: k, data: data}
	mb.elem = b.lru.PushFront(mb)
	b.mem[k] = mb
	b.memBytes += int64(len(data))
	b.evictLocked()
}

// evictLocked drops the least recently used blocks until the cached and
// in-flight bytes fit in the memory budget.
func (b *Blocks) evictLocked() {
	for b.memBytes+b.flying > b.o.Memory {
		e := b.lru.Back()
		if e == nil {
			return
		}
		mb := e.Value.(*memBlock)
		b.lru.Remove(e)
		delete(b.mem, mb.k)
		b.memBytes -= int64(len(mb.data))
	}
}

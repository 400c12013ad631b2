package fs

import "sync"

// inodes assigns inode numbers. A name gets a number when the kernel first
// learns of it (lookup, create, readdir) and keeps it while the kernel
// knows the node; a number is never given to another name (a counter, not
// a hash of the name). So two names never meet in one go-fuse node
// (go-fuse merges nodes with equal numbers), a renamed file keeps its
// number under its new name, and a name that is removed and created again
// gets a new node, apart from the one that open handles of the old file
// still use.
//
// An account mount has one table for all its containers (numbers are
// unique in a mount): each container's names live in a namespace of it
// (within).
type inodes struct {
	*inodeTable
	ns string // prefix of this view's keys: "" or a container's name and NUL
}

type inodeTable struct {
	mu     sync.Mutex        // guards next, byName
	next   uint64            // the next number to hand out
	byName map[string]uint64 // inoKey(rel, dir) -> number
}

func newInodes() *inodes {
	// 1 is the root (FUSE_ROOT_ID).
	return &inodes{inodeTable: &inodeTable{next: 2, byName: map[string]uint64{}}}
}

// within is the view of the same table for the names of container c.
func (t *inodes) within(c string) *inodes {
	return &inodes{inodeTable: t.inodeTable, ns: t.ns + c + "\x00"}
}

func (t *inodes) inoKey(rel string, dir bool) string {
	if dir {
		return t.ns + "d:" + rel
	}
	return t.ns + "f:" + rel
}

// get returns the number of rel, assigning one if it has none.
func (t *inodes) get(rel string, dir bool) uint64 {
	k := t.inoKey(rel, dir)
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.byName[k]; ok {
		return n
	}
	n := t.next
	t.next++
	t.byName[k] = n
	return n
}

// move gives the file at from the name to (rename): to's old number, if
// any, is forgotten with the file it named.
func (t *inodes) move(from, to string) {
	kf, kt := t.inoKey(from, false), t.inoKey(to, false)
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.byName[kf]
	delete(t.byName, kf)
	delete(t.byName, kt)
	if ok {
		t.byName[kt] = n
	}
}

// drop forgets rel's number if it is still ino (a FORGET of that node, or
// the name's removal; a later file of that name gets a new number).
func (t *inodes) drop(rel string, dir bool, ino uint64) {
	k := t.inoKey(rel, dir)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byName[k] == ino {
		delete(t.byName, k)
	}
}

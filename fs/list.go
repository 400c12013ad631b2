package fs

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// Directory listings.
//
// A readdir is a stream over Swift's listing pages: a goroutine of the
// directory handle fetches the pages (10,000 names each) while the kernel
// takes the entries, one page ahead at most, so the first entries reach
// ls before the last page is fetched and memory stays at about two pages
// whatever the size of the directory.
//
// Each entry's attributes come from the listing (size, ETag, content
// type, last-modified; the total size of an SLO), so READDIRPLUS (the
// kernel's readdir with a lookup of every entry, what ls -l and libvirt's
// pool refresh cause) answers every lookup without a request. Only a
// zero-byte object is HEADed (it may be a DLO manifest, whose size and
// parts the listing does not show), at most headParallel at a time, ahead
// of the kernel. The listed attributes go to the metadata cache for
// ListTTL, counted from the request of their page, so a stat, an open or a
// lookup after the listing costs nothing either; this mount's own commits,
// renames and deletes drop them at once (cache.Meta.Forget refuses answers
// read before it).
//
// The kernel keeps the names of a directory listed completely
// (FOPEN_CACHE_DIR) until ListTTL has passed since that listing: the next
// opendir after it, or after one of this mount's changes in the
// directory, drops the kernel's copy and lists afresh. What another host
// changes in a directory shows in its listing within ListTTL.
//
// DLO parts are hidden from a listing when their manifest came before
// them in it (the manifest's name is a prefix of its parts': Glance's
// "<uuid>" and "<uuid>-00001", the swift CLI's layouts), or when an
// earlier listing of the directory found the manifest; Glance's parts are
// hidden by their shape in any case.

// headParallel bounds the HEADs of zero-byte objects of one listing.
const headParallel = 16

// listAhead is how many entries the listing goroutine may fetch ahead of
// the kernel: one page, so that the next page is fetched while the kernel
// takes this one.
const listAhead = 10_000

// listTTL is how long what a listing told is trusted.
func (r *Root) listTTL() time.Duration {
	if r.o.ListTTL > 0 {
		return r.o.ListTTL
	}
	return r.o.AttrTTL
}

// listings remembers when each directory was last listed completely, for
// the kernel's copy of its names.
type listings struct {
	mu sync.Mutex           // guards at
	at map[string]time.Time // a directory's object prefix -> its listing's start
}

func (l *listings) fresh(prefix string, ttl time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[prefix]
	return ok && time.Since(t) < ttl
}

func (l *listings) done(prefix string, t time.Time) {
	l.mu.Lock()
	l.at[prefix] = t
	l.mu.Unlock()
}

// forgetListing drops the kernel's copy of the names of obj's directory at
// its next opendir (this mount changed the directory).
func (r *Root) forgetListing(obj string) {
	dir := obj[:strings.LastIndexByte(obj, '/')+1]
	r.lists.mu.Lock()
	delete(r.lists.at, dir)
	r.lists.mu.Unlock()
}

var _ fusefs.NodeOpendirHandler = (*dirNode)(nil)

// OpendirHandle opens a listing stream. The kernel may keep the names it
// read while the directory's last complete listing is fresh.
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	r := d.root
	h := &dirHandle{d: d, prefix: d.listPrefix()}
	if r.listTTL() <= 0 {
		return h, 0, 0 // the kernel keeps nothing
	}
	if !r.lists.fresh(h.prefix, r.listTTL()) {
		// The kernel's copy (if any) is older than the TTL, or this mount
		// changed the directory: drop it, the stream fills a new one.
		// (go-fuse gives FOPEN_CACHE_DIR only with FOPEN_KEEP_CACHE.)
		// Inside OPENDIR this waits on no page the kernel holds locked.
		_ = d.NotifyContent(0, 0)
	}
	return h, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// listItem is one entry of a listing, with the HEAD of a zero-byte object
// under way.
type listItem struct {
	in   segments.Info
	head chan headAnswer // nil: the listing's Info is all there is
	err  error           // the listing failed here
}

type headAnswer struct {
	in  segments.Info
	err error
}

// dirHandle is an open directory: a listing stream. go-fuse serializes
// Readdirent, Lookup and Seekdir of one handle.
type dirHandle struct {
	d      *dirNode
	prefix string

	items  chan *listItem // from the lister; closed at the end
	cancel context.CancelFunc
	wg     sync.WaitGroup // the lister and its HEADs

	started  time.Time
	open     []string        // names emitted that a later subdir entry could repeat
	local    map[string]bool // files being written on this host: listed at the end
	localOut []string        // of those, the ones still to emit
	refs     []dloRef        // DLO manifests of the directory found so far
	last     segments.Info   // the entry Readdirent returned last
	lastDir  bool            // ... and whether it is a directory
	failed   bool            // the listing stopped with an error
	emitted  uint64          // entries returned since the listing started
	ended    bool            // the listing's entries are all out
}

var (
	_ fusefs.FileReaddirenter = (*dirHandle)(nil)
	_ fusefs.FileLookuper     = (*dirHandle)(nil)
	_ fusefs.FileSeekdirer    = (*dirHandle)(nil)
	_ fusefs.FileReleasedirer = (*dirHandle)(nil)
)

// start begins the listing.
func (h *dirHandle) start() {
	r := h.d.root
	ctx, cancel := context.WithCancel(r.lifetime()) // see the package doc
	h.cancel = cancel
	h.items = make(chan *listItem, listAhead)
	h.started = time.Now()
	h.open = h.open[:0]
	h.local = map[string]bool{}
	h.localOut = r.uploadingIn(h.prefix)
	for _, n := range h.localOut {
		h.local[n] = true
	}
	h.refs = r.cachedDLOs(h.prefix)
	h.failed, h.ended, h.emitted = false, false, 0
	sem := make(chan struct{}, headParallel)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(h.items)
		err := r.c.List(ctx, h.prefix, '/', func(in segments.Info) error {
			it := &listItem{in: in}
			if !in.Subdir && in.Size == 0 && !strings.HasSuffix(in.Name, "/") && in.ContentType != dirMarkerType {
				it.head = make(chan headAnswer, 1)
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return ctx.Err()
				}
				h.wg.Add(1)
				go func() {
					defer h.wg.Done()
					defer func() { <-sem }()
					full, err := r.headIf(ctx, in.Name, notListed)
					it.head <- headAnswer{full, err}
				}()
			}
			select {
			case h.items <- it:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil && ctx.Err() == nil {
			h.items <- &listItem{err: err}
		}
	}()
}

// stop ends the listing and waits for its goroutines.
func (h *dirHandle) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	for range h.items { // unblock the lister
	}
	h.wg.Wait()
	h.cancel = nil
}

func (h *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) { h.stop() }

// Seekdir lists afresh and skips to entry off (the entries' offsets are
// their positions in the stream: go-fuse numbers them 1, 2, ...). Offset
// 0 is rewinddir. Other offsets come when the kernel's cached copy of the
// directory (FOPEN_CACHE_DIR) is dropped while a reader is part way
// through it: the kernel goes on reading at its position, from the
// daemon. (go-fuse replays an interrupted batch itself.) Entries added or
// removed meanwhile may be skipped or seen twice, as readdir allows.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.stop()
	h.emitted = 0 // the next Readdirent starts the listing again
	for h.emitted < off {
		de, errno := h.Readdirent(ctx)
		if errno != 0 {
			return errno
		}
		if de == nil {
			break // the directory is shorter now: the reader sees its end
		}
	}
	return 0
}

// Readdirent returns the next entry of the listing.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.cancel == nil {
		h.start()
	}
	de, errno := h.next()
	if de != nil {
		h.emitted++
	}
	return de, errno
}

// next returns the next entry of the listing, nil at its end.
func (h *dirHandle) next() (*fuse.DirEntry, syscall.Errno) {
	r := h.d.root
	for {
		// No EINTR on the request's interrupt (the package doc): go-fuse
		// would keep that error for every later batch of this handle
		// (v2.12.1 never clears overflowErrno), losing an entry in each.
		it, ok := <-h.items
		if !ok {
			return h.nextLocal(), 0
		}
		if it.err != nil {
			h.failed = true
			return nil, r.errnoOf("readdir", h.d.rel, it.err)
		}
		name, dir, in, keep := h.entry(it)
		if !keep {
			continue
		}
		h.last, h.lastDir = in, dir
		mode := uint32(syscall.S_IFREG)
		if dir {
			mode = syscall.S_IFDIR
		}
		return &fuse.DirEntry{Name: name, Mode: mode, Ino: r.inos.get(join(h.d.rel, name), dir)}, 0
	}
}

// entry turns a listing item into a directory entry, or drops it (a
// repeat, a DLO part, a hidden name, a file this host is writing).
func (h *dirHandle) entry(it *listItem) (name string, dir bool, in segments.Info, keep bool) {
	r := h.d.root
	in = it.in
	name = strings.TrimPrefix(in.Name, h.prefix)
	switch {
	case in.Subdir || strings.HasSuffix(name, "/"):
		name, dir = strings.TrimSuffix(name, "/"), true
	case in.ContentType == dirMarkerType && in.Size == 0:
		dir = true
	}
	if name == "" {
		return "", false, in, false
	}
	// The names that start with a name come right after it (the listing
	// is in name order), so a subdir "x/" after an object "x" is found
	// among the emitted names that are prefixes of the current one.
	i := len(h.open)
	for i > 0 && !strings.HasPrefix(name, h.open[i-1]) {
		i--
	}
	h.open = h.open[:i]
	for _, o := range h.open {
		if o == name {
			return "", false, in, false
		}
	}
	if dir {
		h.open = append(h.open, name)
		return name, true, in, true
	}
	if h.local[name] {
		return "", false, in, false
	}
	if it.head != nil {
		if a := <-it.head; a.err == nil {
			in = a.in
			if c, p, ok := segments.DLOTarget(in); ok && c == r.c.Name() && p != "" && strings.HasPrefix(p, h.prefix) && p != in.Name {
				h.refs = append(h.refs, dloRef{manifest: in.Name, prefix: p})
			}
		}
	}
	if partOf(h.refs, in.Name) != "" || r.hidden(strings.TrimPrefix(in.Name, r.c.Prefix())) {
		return "", false, in, false
	}
	h.open = append(h.open, name)
	if in.Listed() {
		// The same version as a HEAD told of: keep what only the HEAD
		// knows (the stored mtime, the digests).
		if old, ok, found := r.meta.Get(in.Name); found && ok && !old.Listed() && old.SameVersion(in) {
			in.Meta, in.SLO, in.DLO = old.Meta, old.SLO, old.DLO
		}
		r.meta.PutAt(in.Name, in, true, in.ListedAt, r.listTTL())
	}
	return name, false, in, true
}

// nextLocal returns the next file being written here, after the listing;
// nil at the end. A complete listing is recorded when it ends.
func (h *dirHandle) nextLocal() *fuse.DirEntry {
	r := h.d.root
	if !h.ended {
		h.ended = true
		if !h.failed {
			r.lists.done(h.prefix, h.started)
			r.rememberDLOs(h.prefix, h.refs, h.started)
		}
	}
	for len(h.localOut) > 0 {
		name := h.localOut[0]
		h.localOut = h.localOut[1:]
		if r.uploading(h.prefix+name) == nil {
			continue // committed meanwhile: the listing showed it, or not yet
		}
		h.last, h.lastDir = segments.Info{Name: h.prefix + name}, false
		return &fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: r.inos.get(join(h.d.rel, name), false)}
	}
	return nil
}

// Lookup answers the kernel's lookup of the entry Readdirent returned
// last (READDIRPLUS) from the listing.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	d, r := h.d, h.d.root
	rel := join(d.rel, name)
	if h.last.Name == "" || strings.TrimSuffix(strings.TrimPrefix(h.last.Name, h.prefix), "/") != name {
		return d.Lookup(ctx, name, out)
	}
	if h.lastDir {
		r.dirAttr(&out.Attr)
		h.timeouts(out, h.last)
		return d.newDir(ctx, rel), 0
	}
	if f := r.uploading(r.object(rel)); f != nil {
		f.fillAttr(&out.Attr)
		return d.newFile(ctx, f), 0
	}
	in := h.last
	if in.Listed() {
		// What the cache holds now: the listing's answer, unless this
		// mount changed the file since the page was fetched (then HEAD).
		var err error
		if in, err = r.head(r.lifetime(), in.Name); err != nil {
			return nil, r.errnoOf("lookup", rel, err)
		}
	}
	ch := d.lookupFile(ctx, name, in, &out.Attr)
	h.timeouts(out, in)
	return ch, 0
}

// timeouts lets the kernel keep a listed entry as long as the listing is
// trusted.
func (h *dirHandle) timeouts(out *fuse.EntryOut, in segments.Info) {
	if !in.Listed() {
		return // go-fuse gives the mount's
	}
	left := max(time.Until(in.ListedAt.Add(h.d.root.listTTL())), time.Millisecond)
	out.SetEntryTimeout(left)
	out.SetAttrTimeout(left)
}

package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// statfs (df) reports the account's usage and quota:
//
//   - used is the bytes the whole account stores (every container, segment
//     containers and imagefs' own state objects included), as Swift's
//     X-Account-Bytes-Used says; Swift updates it asynchronously (its
//     container updater), so it trails recent writes;
//   - the size is the smaller of the account's quota
//     (X-Account-Meta-Quota-Bytes) and the container's
//     (X-Container-Meta-Quota-Bytes); without either, Swift states no limit
//     and cannot say how much room the cluster has, so the size is used +
//     NoQuotaAvail, a nominal 1 PiB free that lets tools which check for
//     room before writing an image go ahead.
//
// The answer is cached for Options.UsageTTL. One refresh (a HEAD of the
// account and one of the container) runs at a time; statfs waits for it
// briefly and otherwise answers with the previous figures.

// NoQuotaAvail is the free space statfs reports without a quota (bytes).
const NoQuotaAvail = 1 << 50

const (
	statfsFrsize = 4096    // the unit of the block counts
	statfsBsize  = 1 << 20 // the preferred I/O size (MaxWrite)
	// How long statfs waits for a refresh: with figures to fall back on,
	// and without any yet (the first statfs of a mount).
	usageWaitStale = 500 * time.Millisecond
	usageWaitFirst = 5 * time.Second
	usageTimeout   = 30 * time.Second // one refresh, retries included
	usageRetry     = 5 * time.Second  // after a failed refresh
)

// usageCache holds the latest usage figures.
type usageCache struct {
	mu      sync.Mutex // guards the fields below
	val     segments.Usage
	at      time.Time     // when val was read; zero before the first success
	next    time.Time     // no refresh before then (after a failure)
	running chan struct{} // closed when the refresh in flight ends; nil if none
	failing bool          // the last refresh failed (logged once)
}

// usage returns the usage figures, refreshed if they are older than the
// TTL, and whether there are any.
func (r *Root) usage() (segments.Usage, bool) {
	u := &r.use
	now := time.Now()
	u.mu.Lock()
	if !u.at.IsZero() && now.Sub(u.at) < r.o.UsageTTL || now.Before(u.next) {
		defer u.mu.Unlock()
		return u.val, !u.at.IsZero()
	}
	if u.running == nil {
		// Its owner is the mount: it ends within usageTimeout, or when
		// the mount's lifetime does.
		u.running = make(chan struct{})
		go r.refreshUsage(u.running)
	}
	done, wait := u.running, usageWaitStale
	if u.at.IsZero() {
		wait = usageWaitFirst
	}
	u.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-r.ctx.Done():
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.val, !u.at.IsZero()
}

// refreshUsage reads the usage once, under the mount's lifetime, and
// closes done.
func (r *Root) refreshUsage(done chan struct{}) {
	ctx, cancel := context.WithTimeout(r.lifetime(), usageTimeout)
	v, err := r.c.Usage(ctx)
	cancel()
	u := &r.use
	u.mu.Lock()
	defer u.mu.Unlock()
	defer close(done)
	u.running = nil
	if err != nil {
		u.next = time.Now().Add(usageRetry)
		if !u.failing && r.ctx.Err() == nil {
			r.o.Log.Warn("could not read the account's usage for statfs (df); reporting the last known figures", "err", err)
		}
		u.failing = true
		return
	}
	if u.failing {
		r.o.Log.Info("the account's usage can be read again")
	}
	u.val, u.at, u.failing = v, time.Now(), false
}

func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	u, _ := d.root.usage() // without figures yet: nothing used, no quota
	fillStatfs(out, u)
	return 0
}

// fillStatfs fills out from usage figures (see the top of the file). An
// account over its quota shows as full, its size the quota.
func fillStatfs(out *fuse.StatfsOut, u segments.Usage) {
	size := u.Used + NoQuotaAvail
	if u.Quota >= 0 {
		size = u.Quota
	}
	blocks := ceilDiv(size, statfsFrsize)
	used := min(ceilDiv(u.Used, statfsFrsize), blocks)
	out.Bsize = statfsBsize
	out.Frsize = statfsFrsize
	out.Blocks = uint64(blocks)
	out.Bfree = uint64(blocks - used)
	out.Bavail = out.Bfree
	// Swift has no inode limit: report the objects and plenty more.
	const freeFiles = 1 << 30
	out.Files = uint64(max(u.Objects, 0)) + freeFiles
	out.Ffree = freeFiles
	out.NameLen = 1024
}

func ceilDiv(n, d int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n + d - 1) / d
}

package fs

import (
	"context"
	"log/slog"
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

// usageCache holds the latest usage figures of a mount's top (a
// container's or, in an account mount, the account's).
type usageCache struct {
	fetch func(ctx context.Context) (segments.Usage, error)
	ttl   time.Duration
	ctx   context.Context // the mount's lifetime
	log   *slog.Logger

	mu      sync.Mutex // guards the fields below
	val     segments.Usage
	at      time.Time     // when val was read; zero before the first success
	next    time.Time     // no refresh before then (after a failure)
	running chan struct{} // closed when the refresh in flight ends; nil if none
	failing bool          // the last refresh failed (logged once)
}

func newUsageCache(ctx context.Context, o Options, fetch func(ctx context.Context) (segments.Usage, error)) *usageCache {
	return &usageCache{fetch: fetch, ttl: o.UsageTTL, ctx: ctx, log: o.Log}
}

// get returns the usage figures, refreshed if they are older than the
// TTL, and whether there are any.
func (u *usageCache) get() (segments.Usage, bool) {
	now := time.Now()
	u.mu.Lock()
	if !u.at.IsZero() && now.Sub(u.at) < u.ttl || now.Before(u.next) {
		defer u.mu.Unlock()
		return u.val, !u.at.IsZero()
	}
	if u.running == nil {
		// Its owner is the mount: it ends within usageTimeout, or when
		// the mount's lifetime does.
		u.running = make(chan struct{})
		go u.refresh(u.running)
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
	case <-u.ctx.Done():
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.val, !u.at.IsZero()
}

// refresh reads the usage once, under the mount's lifetime, and closes
// done.
func (u *usageCache) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(u.ctx, usageTimeout)
	v, err := u.fetch(ctx)
	cancel()
	u.mu.Lock()
	defer u.mu.Unlock()
	defer close(done)
	u.running = nil
	if err != nil {
		u.next = time.Now().Add(usageRetry)
		if !u.failing && u.ctx.Err() == nil {
			u.log.Warn("could not read the account's usage for statfs (df); reporting the last known figures", "err", err)
		}
		u.failing = true
		return
	}
	if u.failing {
		u.log.Info("the account's usage can be read again")
	}
	u.val, u.at, u.failing = v, time.Now(), false
}

// statfs answers statfs from u; without figures yet: nothing used, no
// quota.
func (u *usageCache) statfs(out *fuse.StatfsOut) syscall.Errno {
	v, _ := u.get()
	fillStatfs(out, v)
	return 0
}

func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return d.root.use.statfs(out)
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

package fs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Warming (imagefs warm): the daemon fetches every block of a file's
// current version into the persistent cache, with a few large ranged GETs
// in flight, so that the next boot from it reads no byte from Swift. The
// job runs under the caller's context (the control socket's request: the
// warm command's Ctrl-C ends it) and the mount's lifetime (an unmount
// ends it).

// WarmOptions tune a warm job.
type WarmOptions struct {
	// Parallel is the number of GETs in flight (default 4); Chunk the
	// bytes of each (default 16 MiB, whole blocks).
	Parallel int
	Chunk    int64
	// Rate caps the bytes per second fetched (0: no cap).
	Rate int64
	// Progress, if set, is called now and then (and at the end) from the
	// job's goroutines, one call at a time.
	Progress func(WarmProgress)
	// Every is how often Progress is called (default 1 s).
	Every time.Duration
}

// WarmProgress is the state of a warm job.
type WarmProgress struct {
	Path    string
	Size    int64 // bytes of the version
	Done    int64 // bytes on disk so far (cached before or warmed)
	Fetched int64 // bytes fetched from Swift by this job
	Elapsed time.Duration
}

// Warm fills the persistent cache with the current version of the file
// rel (relative to the mount) and returns the final progress. Blocks
// already cached are skipped. It fails if the cache has no directory, if
// rel is not a file, or if a block could not be fetched or written.
func (r *Root) Warm(ctx context.Context, rel string, o WarmOptions) (WarmProgress, error) {
	rel = strings.Trim(path.Clean("/"+rel), "/")
	p := WarmProgress{Path: rel}
	if rel == "" {
		return p, errors.New("the mount's root is a directory: name the files to warm")
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Chunk <= 0 {
		o.Chunk = 16 << 20
	}
	if o.Every <= 0 {
		o.Every = time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.lifetime(), cancel)()
	obj, err := r.c.Open(ctx, r.object(rel))
	if isNotFound(err) {
		return p, fmt.Errorf("%s: no such file in the mount (or it is a directory)", rel)
	}
	if err != nil {
		return p, fmt.Errorf("open %s: %w", rel, err)
	}
	defer obj.Close()
	key := obj.Manifest.Version
	if key == "" {
		return p, fmt.Errorf("%s cannot be cached: some of its segments have no ETag", rel)
	}
	f := r.blocks.Open(key, obj.Size(), obj.Reader)
	if _, err := f.Warm(ctx, 0, 0); err != nil {
		return p, err // no disk tier
	}
	p.Size = f.Size()
	bs := r.blocks.BlockSize()
	if o.Rate > 0 { // no burst of more than a second's worth
		o.Chunk = min(o.Chunk, max(o.Rate, bs))
	}
	per := max(o.Chunk/bs, 1)
	n := f.Blocks()

	var done, fetched atomic.Int64
	var next atomic.Int64 // next chunk to take
	for idx := range n {
		if f.Cached(idx) {
			done.Add(blockBytes(idx, bs, p.Size))
		}
	}
	start := time.Now()
	var progressMu sync.Mutex
	report := func() {
		if o.Progress == nil {
			return
		}
		progressMu.Lock()
		defer progressMu.Unlock()
		q := p
		q.Done, q.Fetched, q.Elapsed = done.Load(), fetched.Load(), time.Since(start)
		o.Progress(q)
	}
	report()
	ticker := time.NewTicker(o.Every)
	defer ticker.Stop()
	stopTicks, ticksDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ticksDone)
		for {
			select {
			case <-ticker.C:
				report()
			case <-stopTicks:
				return
			}
		}
	}()
	lim := newLimiter(o.Rate)
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	for range o.Parallel {
		wg.Go(func() {
			for ctx.Err() == nil {
				c := next.Add(1) - 1
				first := c * per
				if first >= n {
					return
				}
				last := min(first+per, n)
				var missing int64
				for idx := first; idx < last; idx++ {
					if !f.Cached(idx) {
						missing += blockBytes(idx, bs, p.Size)
					}
				}
				if missing == 0 {
					continue
				}
				if err := lim.wait(ctx, missing); err != nil {
					return
				}
				got, err := f.Warm(ctx, first, last)
				fetched.Add(got)
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				done.Add(missing)
			}
		})
	}
	wg.Wait()
	close(stopTicks)
	<-ticksDone // no report after Warm returns
	// What is on disk now, whatever the counters say.
	var onDisk int64
	for idx := range n {
		if f.Cached(idx) {
			onDisk += blockBytes(idx, bs, p.Size)
		}
	}
	done.Store(onDisk)
	report()
	p.Done, p.Fetched, p.Elapsed = onDisk, fetched.Load(), time.Since(start)
	switch {
	case firstErr != nil:
		return p, fmt.Errorf("warm %s: %w", rel, firstErr)
	case ctx.Err() != nil:
		return p, fmt.Errorf("warm %s: stopped: %w", rel, context.Cause(ctx))
	case onDisk < p.Size:
		return p, fmt.Errorf("warm %s: only %d of %d bytes stayed in the cache directory: the cache is too small for it (raise --cache-size) or other reads evicted them", rel, onDisk, p.Size)
	}
	r.o.Log.Info("warmed", "path", rel, "bytes", p.Size, "fetched", p.Fetched, "seconds", p.Elapsed.Seconds())
	return p, nil
}

func blockBytes(idx, bs, size int64) int64 { return min(bs, size-idx*bs) }

// limiter paces a byte rate: each caller is given a start time after the
// bytes granted before it.
type limiter struct {
	rate float64 // bytes per second; 0: no limit
	mu   sync.Mutex
	next time.Time
}

func newLimiter(rate int64) *limiter { return &limiter{rate: float64(rate)} }

// wait returns when n more bytes may be fetched, or with ctx's error.
func (l *limiter) wait(ctx context.Context, n int64) error {
	if l.rate <= 0 {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	l.next = at.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

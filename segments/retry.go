package segments

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"time"
)

// RetryPolicy bounds how an operation is retried: exponential backoff with
// full jitter between Base and Cap, for at most Budget in all.
type RetryPolicy struct {
	Base, Cap time.Duration
	Budget    time.Duration // total time an operation may spend retrying
	Attempt   time.Duration // per-attempt timeout for calls without a body stream (0: none)
	// Counts, if set, counts the retries (for metrics).
	Counts *RetryCounts
}

// RetryCounts counts retries by operation and cause. It is safe for
// concurrent use.
type RetryCounts struct {
	mu sync.Mutex
	m  map[RetryKey]int64
}

// RetryKey is what a retry is counted by: the operation ("PUT", "GET",
// "HEAD", "PUT-MANIFEST", ...) and the cause of the failure, from
// RetryCause.
type RetryKey struct{ Op, Cause string }

func (c *RetryCounts) add(op string, err error) {
	if c == nil {
		return
	}
	k := RetryKey{Op: op, Cause: RetryCause(err)}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[RetryKey]int64{}
	}
	c.m[k]++
	c.mu.Unlock()
}

// Snapshot returns the counts so far.
func (c *RetryCounts) Snapshot() map[RetryKey]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// DefaultRetryPolicy is generous, because a transient error is worse for a
// filesystem than a slow answer.
var DefaultRetryPolicy = RetryPolicy{Base: 250 * time.Millisecond, Cap: 20 * time.Second, Budget: 3 * time.Minute, Attempt: 2 * time.Minute}

// backoff returns the pause before attempt n (1-based retry count).
func (p RetryPolicy) backoff(n int, serverAsked time.Duration) time.Duration {
	d := p.Base << min(n-1, 16)
	if d > p.Cap || d <= 0 {
		d = p.Cap
	}
	d = time.Duration(rand.Int64N(int64(max(d, 1))) + 1)
	// The parsers cap Retry-After already; this holds for any caller.
	return max(d, min(serverAsked, maxRetryAfter))
}

// Do runs fn until it succeeds, fails permanently, the budget is spent or
// ctx is done. It logs each retry at Warn.
func (p RetryPolicy) Do(ctx context.Context, log *slog.Logger, op, object string, fn func(ctx context.Context) error) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		ok, after := retryable(err)
		if !ok || ctx.Err() != nil {
			return err
		}
		wait := p.backoff(attempt, after)
		if time.Since(start)+wait > p.Budget {
			return err
		}
		p.Counts.add(op, err)
		if log != nil {
			log.Warn("retrying", "op", op, "object", object, "attempt", attempt, "wait", wait.Round(time.Millisecond), "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Retrying wraps an ObjectStore so that every call is retried under p.
// Get retries only until the body starts; Reader resumes broken bodies.
type Retrying struct {
	ObjectStore
	P   RetryPolicy
	Log *slog.Logger
}

func (r *Retrying) do(ctx context.Context, op, obj string, fn func(ctx context.Context) error) error {
	return r.P.Do(ctx, r.Log, op, obj, fn)
}

func (r *Retrying) attemptCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.P.Attempt > 0 {
		return context.WithTimeout(ctx, r.P.Attempt)
	}
	return ctx, func() {}
}

func (r *Retrying) Put(ctx context.Context, container, object string, body io.ReadSeeker, size int64, md5 string, o PutOptions) (etag string, err error) {
	err = r.do(ctx, "PUT", objPath(container, object), func(ctx context.Context) error {
		etag, err = r.ObjectStore.Put(ctx, container, object, body, size, md5, o)
		return err
	})
	return etag, err
}

func (r *Retrying) Get(ctx context.Context, container, object string, off, n int64, ifMatch string) (rc io.ReadCloser, err error) {
	err = r.do(ctx, "GET", objPath(container, object), func(ctx context.Context) error {
		rc, err = r.ObjectStore.Get(ctx, container, object, off, n, ifMatch)
		return err
	})
	return rc, err
}

func (r *Retrying) Head(ctx context.Context, container, object string) (in Info, err error) {
	err = r.do(ctx, "HEAD", objPath(container, object), func(ctx context.Context) error {
		actx, cancel := r.attemptCtx(ctx)
		defer cancel()
		in, err = r.ObjectStore.Head(actx, container, object)
		return err
	})
	return in, err
}

func (r *Retrying) PutManifest(ctx context.Context, container, object string, entries []ManifestEntry, o PutOptions) (etag string, err error) {
	err = r.do(ctx, "PUT-MANIFEST", objPath(container, object), func(ctx context.Context) error {
		etag, err = r.ObjectStore.PutManifest(ctx, container, object, entries, o)
		return err
	})
	return etag, err
}

func (r *Retrying) GetManifest(ctx context.Context, container, object string) (es []ManifestEntry, err error) {
	err = r.do(ctx, "GET-MANIFEST", objPath(container, object), func(ctx context.Context) error {
		actx, cancel := r.attemptCtx(ctx)
		defer cancel()
		es, err = r.ObjectStore.GetManifest(actx, container, object)
		return err
	})
	return es, err
}

func (r *Retrying) Copy(ctx context.Context, container, src, dst string) error {
	return r.do(ctx, "COPY", objPath(container, src), func(ctx context.Context) error {
		return r.ObjectStore.Copy(ctx, container, src, dst)
	})
}

func (r *Retrying) Delete(ctx context.Context, container, object string) error {
	return r.do(ctx, "DELETE", objPath(container, object), func(ctx context.Context) error {
		actx, cancel := r.attemptCtx(ctx)
		defer cancel()
		return r.ObjectStore.Delete(actx, container, object)
	})
}

func (r *Retrying) DeleteMany(ctx context.Context, container string, objects []string) error {
	return r.do(ctx, "BULK-DELETE", container, func(ctx context.Context) error {
		return r.ObjectStore.DeleteMany(ctx, container, objects)
	})
}

func (r *Retrying) List(ctx context.Context, container, prefix string, delimiter rune, fn func(Info) error) error {
	return retryListing(ctx, r, container+"/"+prefix, func(ctx context.Context, each func(Info) error) error {
		return r.ObjectStore.List(ctx, container, prefix, delimiter, each)
	}, func(in Info) string { return in.Name }, fn)
}

func (r *Retrying) ListContainers(ctx context.Context, prefix string, fn func(name string) error) error {
	return retryListing(ctx, r, "/"+prefix, func(ctx context.Context, each func(string) error) error {
		return r.ObjectStore.ListContainers(ctx, prefix, each)
	}, func(name string) string { return name }, fn)
}

// retryListing runs a listing under r's retries. A retried listing starts
// again from the beginning; entries fn has already seen are skipped, so fn
// sees each name once, in order. fn's error ends it, never retried.
func retryListing[T any](ctx context.Context, r *Retrying, what string, list func(context.Context, func(T) error) error,
	name func(T) string, fn func(T) error) error {
	var last string
	seen := false
	err := r.do(ctx, "LIST", what, func(ctx context.Context) error {
		return list(ctx, func(e T) error {
			n := name(e)
			if seen && n <= last {
				return nil
			}
			seen, last = true, n
			if err := fn(e); err != nil {
				return &callbackError{err}
			}
			return nil
		})
	})
	var ce *callbackError
	if errors.As(err, &ce) {
		return ce.err
	}
	return err
}

// callbackError carries the error of a listing's callback through the
// retry loop, which must not retry it.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

func (r *Retrying) HeadContainer(ctx context.Context, container string) (ci ContainerInfo, err error) {
	err = r.do(ctx, "HEAD", container, func(ctx context.Context) error {
		actx, cancel := r.attemptCtx(ctx)
		defer cancel()
		ci, err = r.ObjectStore.HeadContainer(actx, container)
		return err
	})
	return ci, err
}

func (r *Retrying) HeadAccount(ctx context.Context) (ai AccountInfo, err error) {
	err = r.do(ctx, "HEAD", "the account", func(ctx context.Context) error {
		actx, cancel := r.attemptCtx(ctx)
		defer cancel()
		ai, err = r.ObjectStore.HeadAccount(actx)
		return err
	})
	return ai, err
}

func (r *Retrying) CreateContainer(ctx context.Context, container string) error {
	return r.do(ctx, "PUT", container, func(ctx context.Context) error {
		return r.ObjectStore.CreateContainer(ctx, container)
	})
}

func (r *Retrying) Limits(ctx context.Context) (l Limits, err error) {
	err = r.do(ctx, "GET", "/info", func(ctx context.Context) error {
		actx, cancel := r.attemptCtx(ctx)
		defer cancel()
		l, err = r.ObjectStore.Limits(actx)
		return err
	})
	return l, err
}

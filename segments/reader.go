package segments

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// ReaderOptions configure a Reader.
type ReaderOptions struct {
	Retry RetryPolicy
	Log   *slog.Logger
	// StallTimeout ends a GET whose body sends nothing for this long; the
	// read resumes on a new connection (0: DefaultStallTimeout, < 0: never).
	// A proxy or object server that hangs mid-body would otherwise hold the
	// reader until the HTTP client's idle timeout, a minute or more.
	StallTimeout time.Duration
}

// DefaultStallTimeout is ReaderOptions.StallTimeout when unset.
const DefaultStallTimeout = 30 * time.Second

// Reader reads one version of an object by ranged GETs against its
// segments: open resolves the manifest once (Resolve), and every read goes
// straight to the segment objects. That avoids Swift's DLO rate limit
// (one segment per second after the tenth of a response) and the ranged
// GET that Swift answers with the whole object once a DLO has 10,000
// segments or more.
//
// Each GET is pinned to the segment's ETag (If-Match), so an object that
// changes underneath gives ErrStale, never mixed data. A body that breaks
// off (reset, short body, stall, 5xx on reconnect) is resumed from the last
// byte received, under the retry policy. Safe for concurrent use.
type Reader struct {
	st ObjectStore
	m  *Manifest
	o  ReaderOptions
	// digested remembers the objects whose GETs carried block digests:
	// their ranges are widened to whole blocks from then on.
	digested sync.Map // container/object -> true
}

// NewReader returns a Reader of the version m describes. st should not
// retry Get itself: the Reader does, resuming where a body broke off.
func NewReader(st ObjectStore, m *Manifest, o ReaderOptions) *Reader {
	if o.Retry == (RetryPolicy{}) {
		o.Retry = DefaultRetryPolicy
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if rs, ok := st.(*Retrying); ok {
		st = rs.ObjectStore // one retry loop, the one that resumes
	}
	return &Reader{st: st, m: m, o: o}
}

// Manifest returns the manifest the Reader reads.
func (r *Reader) Manifest() *Manifest { return r.m }

// Size is the object's size.
func (r *Reader) Size() int64 { return r.m.Size() }

// ReadAt reads len(p) bytes at off, following the io.ReaderAt contract:
// n < len(p) comes with an error (io.EOF at the end of the object).
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	want := int64(len(p))
	if off >= r.m.Size() {
		if want == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	short := off+want > r.m.Size()
	if short {
		want = r.m.Size() - off
	}
	w := &sliceWriter{p: p[:want]}
	n, err := r.CopyRange(ctx, w, off, want)
	if err == nil && short {
		err = io.EOF
	}
	return int(n), err
}

// sliceWriter fills a byte slice in order.
type sliceWriter struct {
	p []byte
	n int
}

func (w *sliceWriter) Write(b []byte) (int, error) {
	n := copy(w.p[w.n:], b)
	w.n += n
	if n < len(b) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// ReadFrom reads straight into the slice, sparing a copy.
func (w *sliceWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for w.n < len(w.p) {
		n, err := r.Read(w.p[w.n:])
		w.n += n
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// CopyRange writes bytes [off, off+n) of the object to w, in order, each
// byte once: one ranged GET per segment piece, and after a broken body a
// new GET from the first byte w has not accepted. If w implements
// io.ReaderFrom (the block cache's writer does), bodies are read straight
// into its buffers. It returns the number of bytes written; fewer than n
// come with an error. A range past the end is cut at the end, without error.
func (r *Reader) CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	end := min(off+n, r.m.Size())
	pos := off
	for pos < end {
		i, inner, ok := r.m.Locate(pos)
		if !ok {
			break
		}
		s := r.m.Segments[i]
		want := min(end-pos, s.Length-inner)
		got, err := r.copySegment(ctx, w, s, inner, want)
		pos += got
		if err != nil {
			return pos - off, err
		}
	}
	return pos - off, nil
}

// Boundary returns the end of the segment that holds off: the first
// offset after off where a read needs a different GET. Past the end it is
// the object's size.
func (r *Reader) Boundary(off int64) int64 {
	i, _, ok := r.m.Locate(off)
	if !ok {
		return r.m.Size()
	}
	return r.m.Start(i) + r.m.Segments[i].Length
}

// copySegment copies bytes [inner, inner+n) of segment s to w, retrying
// and resuming under the retry policy.
func (r *Reader) copySegment(ctx context.Context, w io.Writer, s Segment, inner, n int64) (int64, error) {
	var got int64
	obj := objPath(s.Container, s.Object)
	refetched := false
	err := r.o.Retry.Do(ctx, r.o.Log, "GET", obj, func(ctx context.Context) error {
		c, err := r.attempt(ctx, w, s, s.Offset+inner+got, n-got)
		got += c
		if errors.Is(err, ErrCorrupt) && !refetched {
			// Once more: a bit flipped on the way is not there twice.
			refetched = true
			r.o.Log.Warn("bytes from Swift do not match their checksum; fetching them again", "object", obj, "err", err)
			return &TransportError{Err: err}
		}
		return err
	})
	if err != nil {
		return got, fmt.Errorf("read %s at %d: %w", obj, s.Offset+inner+got, err)
	}
	return got, nil
}

// attempt is one GET of bytes [off, off+n) of segment s into w. A body
// that sends nothing for the stall timeout is cut, so that the retry loop
// reconnects.
//
// What it reads is verified where a checksum exists (see digest.go): the
// range is then widened to whole digest blocks, and only checked bytes
// reach w.
func (r *Reader) attempt(ctx context.Context, w io.Writer, s Segment, off, n int64) (int64, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wd *watchdog
	if r.o.StallTimeout > 0 {
		wd = newWatchdog(r.o.StallTimeout, cancel)
		defer wd.stop()
	}
	name := objPath(s.Container, s.Object)
	lo, hi := off, off+n
	if s.Size > 0 && s.Size <= maxDigestedSize && r.mayHaveDigests(s) {
		b := digestBlock(s.Size)
		lo, hi = off-off%b, min((off+n+b-1)/b*b, s.Size)
	}
	rc, err := r.st.Get(actx, s.Container, s.Object, lo, hi-lo, s.ETag)
	if err != nil {
		return 0, wd.explain(ctx, err)
	}
	defer rc.Close()
	var body io.Reader = io.LimitReader(rc, hi-lo)
	if wd != nil {
		body = &kickReader{r: body, wd: wd}
	}
	v := &verifier{w: w, name: name, size: s.Size, pos: lo, off: off, end: off + n}
	if block, crcs, ok := parseDigestMeta(metaOf(rc), s.Size); ok {
		v.block, v.crcs = block, crcs
		r.digested.Store(name, true)
	} else if lo == 0 && hi == s.Size && s.Size <= maxWholeVerify && isMD5(s.ETag) {
		v.md5, v.want = newMD5(), s.ETag
	}
	var got int64
	if v.block == 0 && v.md5 == nil && lo == off && hi == off+n {
		got, err = io.Copy(w, body) // nothing to check: straight into w
	} else {
		_, err = io.Copy(v, body)
		if err == nil && v.pos == hi {
			err = v.finish()
		}
		got = v.passed
	}
	if err == nil && got < n {
		// The segment is shorter than the manifest said, or the body
		// ended early without the transport noticing.
		err = &TransportError{Err: fmt.Errorf("GET %s: %w", name, errShortBody)}
	}
	return got, wd.explain(ctx, err)
}

// mayHaveDigests reports whether GETs of s are worth widening to whole
// digest blocks: objects imagefs uploaded carry digests (segment names with
// an upload id), and so do those a GET showed to have them.
func (r *Reader) mayHaveDigests(s Segment) bool {
	if _, ok := r.digested.Load(objPath(s.Container, s.Object)); ok {
		return true
	}
	prefix, started := uploadOf(s.Object)
	return !started.IsZero() && strings.HasSuffix(prefix, "/")
}

// isMD5 reports whether an ETag is a plain object's MD5 (not a manifest's).
func isMD5(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	_, err := hex.DecodeString(etag)
	return err == nil
}

// watchdog calls cancel when kick has not been called for d.
type watchdog struct {
	d     time.Duration
	t     *time.Timer
	mu    sync.Mutex // guards fired
	fired bool
}

func newWatchdog(d time.Duration, cancel context.CancelFunc) *watchdog {
	wd := &watchdog{d: d}
	wd.t = time.AfterFunc(d, func() {
		wd.mu.Lock()
		wd.fired = true
		wd.mu.Unlock()
		cancel()
	})
	return wd
}

func (wd *watchdog) kick() { wd.t.Reset(wd.d) }
func (wd *watchdog) stop() { wd.t.Stop() }

// explain replaces the cancellation the watchdog caused by errStalled,
// which the retry loop retries; the caller's own cancellation stays.
func (wd *watchdog) explain(parent context.Context, err error) error {
	if err == nil || wd == nil || parent.Err() != nil {
		return err
	}
	wd.mu.Lock()
	fired := wd.fired
	wd.mu.Unlock()
	if fired {
		return &TransportError{Err: fmt.Errorf("%w for %v (%v)", errStalled, wd.d, err)}
	}
	return err
}

// kickReader kicks the watchdog whenever bytes arrive.
type kickReader struct {
	r  io.Reader
	wd *watchdog
}

func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	if n > 0 {
		k.wd.kick()
	}
	return n, err
}

package fs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/segments"
)

// Boot traces (segments/trace.go has the format and where they live). The
// first read open of a version on this host asks Swift for the version's
// trace. If there is one, it is prefetched, in order, ahead of the reader,
// while the version is open. If there is none, the blocks read through
// every open of the version are recorded for Options.TraceWindow
// (bounded: MaxTraceExtents, MaxTraceBytes) and the trace is stored at
// the end of the window, or once the version has had no open for
// traceLinger, whichever comes first. The work is per version, not per
// open: libvirt and qemu open an image, read its header and close it
// before the open that boots, and that probe must neither end the
// recording nor stop the replay. Later opens of the version on this host
// do nothing more: its blocks are in this host's cache by then.

// DefaultTraceWindow is the default of Options.TraceWindow.
const DefaultTraceWindow = 30 * time.Second

const (
	// Bounds of the replay.
	replayParallel = 4
	replayChunk    = 4 << 20
	// traceLinger is how long a version with no open keeps its trace
	// work going: a probe's close is followed by the real open at once.
	traceLinger = 2 * time.Second
)

// traceSet is the trace work of the versions opened on this host.
type traceSet struct {
	mu   sync.Mutex
	runs map[string]*traceRun // by version key, while opened
	done map[string]bool      // versions traced: nothing more to do

	recorded, replayed, replayBytes atomic.Int64
}

// traceRun is the trace work of one version on this host: record, or
// replay the trace found in Swift.
type traceRun struct {
	r      *Root
	object string
	key    string
	file   *cache.File
	ctx    context.Context // of the replay: ends once the version is closed
	cancel context.CancelFunc

	mu      sync.Mutex // guards the fields below
	refs    int        // opens of the version
	linger  *time.Timer
	rec     bool // recording (until the window ends, a trace is found, or it is stored)
	looked  bool // the lookup found no (good) trace
	due     bool // store was called before that
	seen    map[int64]bool
	extents []segments.Extent
	bytes   int64
	timer   *time.Timer
}

// openTrace attaches a read open of version key of object to the
// version's trace work (nil with traces off); the open calls close when
// it is released.
func (r *Root) openTrace(object, key string, file *cache.File) *traceRun {
	if !r.o.BootTraces || key == "" || file.Size() == 0 {
		return nil
	}
	s := &r.traces
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[key] {
		return nil
	}
	t := s.runs[key]
	if t == nil {
		if s.runs == nil {
			s.runs, s.done = map[string]*traceRun{}, map[string]bool{}
		}
		ctx, cancel := context.WithCancel(r.lifetime())
		t = &traceRun{r: r, object: object, key: key, file: file, ctx: ctx, cancel: cancel, rec: true, seen: map[int64]bool{}}
		s.runs[key] = t
		t.timer = time.AfterFunc(r.o.TraceWindow, t.store)
		go t.lookup()
	}
	t.mu.Lock()
	t.refs++
	if t.linger != nil {
		t.linger.Stop()
	}
	t.mu.Unlock()
	return t
}

// lookup reads the version's trace; if there is one, recording stops and
// the replay begins. Without one, the recording goes on and is stored
// (not before the lookup ended: a close before that must not replace a
// trace in Swift).
func (t *traceRun) lookup() {
	ctx, cancel := context.WithTimeout(t.r.lifetime(), time.Minute)
	defer cancel()
	tr, err := t.r.c.Versions().GetTrace(ctx, t.object, t.key, t.file.Size())
	if err != nil {
		switch {
		case isNotFound(err):
		case errors.Is(err, segments.ErrBadTrace):
			t.r.o.Log.Warn("ignoring a bad boot trace; this open records a new one", "object", t.object, "err", err)
		default:
			t.r.o.Log.Debug("boot trace lookup failed", "object", t.object, "err", err)
		}
		t.mu.Lock()
		t.looked = true
		due := t.due
		t.mu.Unlock()
		if due {
			t.store()
		}
		return
	}
	t.mu.Lock()
	t.rec = false
	t.timer.Stop()
	t.mu.Unlock()
	t.r.traces.replayed.Add(1)
	t.r.o.Log.Debug("replaying a boot trace", "object", t.object, "extents", len(tr.Extents), "bytes", tr.Bytes())
	t.replay(t.ctx, tr)
}

// replay reads the trace's extents into the cache, in order, a few at a
// time, until done or ctx ends (the file was closed).
func (t *traceRun) replay(ctx context.Context, tr *segments.Trace) {
	type piece struct{ off, n int64 }
	work := make(chan piece)
	var wg sync.WaitGroup
	for range replayParallel {
		wg.Go(func() {
			buf := make([]byte, replayChunk)
			for p := range work {
				n, err := t.file.ReadAt(ctx, buf[:p.n], p.off)
				t.r.traces.replayBytes.Add(int64(n))
				if err != nil && ctx.Err() == nil {
					t.r.o.Log.Debug("boot trace prefetch failed", "object", t.object, "off", p.off, "len", p.n, "err", err)
				}
			}
		})
	}
feed:
	for _, e := range tr.Extents {
		for off := e.Off; off < e.Off+e.Len; off += replayChunk {
			select {
			case work <- piece{off, min(replayChunk, e.Off+e.Len-off)}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(work)
	wg.Wait()
}

// read records a read of n bytes at off, while recording.
func (t *traceRun) read(off, n int64) {
	if t == nil || n <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.rec {
		return
	}
	bs := t.r.blocks.BlockSize()
	size := t.file.Size()
	for idx := off / bs; idx*bs < min(off+n, size); idx++ {
		if t.seen[idx] {
			continue
		}
		start, l := idx*bs, min(bs, size-idx*bs)
		if t.bytes+l > segments.MaxTraceBytes {
			return
		}
		if k := len(t.extents) - 1; k >= 0 && t.extents[k].Off+t.extents[k].Len == start {
			t.extents[k].Len += l
		} else {
			if len(t.extents) == segments.MaxTraceExtents {
				return
			}
			t.extents = append(t.extents, segments.Extent{Off: start, Len: l})
		}
		t.seen[idx] = true
		t.bytes += l
	}
}

// store ends the recording and stores the trace, once (at the end of the
// window or at close).
func (t *traceRun) store() {
	t.mu.Lock()
	if !t.rec {
		t.mu.Unlock()
		return
	}
	if !t.looked {
		t.due = true // the lookup stores it once it found nothing
		t.mu.Unlock()
		return
	}
	t.rec = false
	t.timer.Stop()
	tr := &segments.Trace{Version: t.key, Extents: t.extents}
	t.extents, t.seen = nil, nil
	t.mu.Unlock()
	if len(tr.Extents) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(t.r.lifetime(), time.Minute)
		defer cancel()
		if err := t.r.c.Versions().PutTrace(ctx, t.object, tr); err != nil {
			if t.r.lifetime().Err() != nil {
				return // unmounted meanwhile
			}
			t.r.o.Log.Warn("cannot store the boot trace", "object", t.object, "err", err)
			return
		}
		t.r.traces.recorded.Add(1)
		t.r.o.Log.Debug("boot trace stored", "object", t.object, "extents", len(tr.Extents), "bytes", tr.Bytes())
	}()
}

// close detaches an open. Once the version has had no open for
// traceLinger, the replay stops and a recording is stored.
func (t *traceRun) close() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refs--; t.refs == 0 {
		t.linger = time.AfterFunc(traceLinger, t.idle)
	}
}

func (t *traceRun) idle() {
	s := &t.r.traces
	s.mu.Lock()
	t.mu.Lock()
	idle := t.refs == 0
	if idle {
		delete(s.runs, t.key)
		s.done[t.key] = true
	}
	t.mu.Unlock()
	s.mu.Unlock()
	if idle {
		t.cancel()
		t.store()
	}
}

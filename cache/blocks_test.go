package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	kib = 1 << 10
	mib = 1 << 20
)

// memSource is an in-memory Source that records what it is asked for.
type memSource struct {
	data []byte
	seg  int64 // segment size, for Boundary (0: one segment)

	mu        sync.Mutex // guards the fields below
	ranges    [][2]int64
	bytes     int64
	cancelled int
	hook      func(ctx context.Context, off, n int64) error
}

func (m *memSource) CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	m.mu.Lock()
	m.ranges = append(m.ranges, [2]int64{off, n})
	hook := m.hook
	m.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, off, n); err != nil {
			if ctx.Err() != nil {
				m.mu.Lock()
				m.cancelled++
				m.mu.Unlock()
			}
			return 0, err
		}
	}
	end := min(off+n, int64(len(m.data)))
	got, err := io.Copy(w, io.LimitReader(bytes.NewReader(m.data[off:end]), end-off))
	m.mu.Lock()
	m.bytes += got
	m.mu.Unlock()
	return got, err
}

func (m *memSource) Boundary(off int64) int64 {
	if m.seg == 0 {
		return int64(len(m.data))
	}
	return min((off/m.seg+1)*m.seg, int64(len(m.data)))
}

func (m *memSource) calls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ranges)
}

// asked is the sum of the lengths asked for.
func (m *memSource) asked() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, r := range m.ranges {
		n += r[1]
	}
	return n
}

// fetched is the bytes copied (counted when a CopyRange returns, which
// may be after its blocks reached the readers).
func (m *memSource) fetched() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

func newBlocks(t *testing.T, o Options) *Blocks {
	t.Helper()
	if o.BlockSize == 0 {
		o.BlockSize = 64 * kib
	}
	if o.Memory == 0 {
		o.Memory = 64 * mib
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func readAt(t *testing.T, r interface {
	ReadAt(context.Context, []byte, int64) (int, error)
}, data []byte, off, n int64) {
	t.Helper()
	p := make([]byte, n)
	got, err := r.ReadAt(t.Context(), p, off)
	want := data[min(off, int64(len(data))):min(off+n, int64(len(data)))]
	if got != len(want) || (err != nil && !(errors.Is(err, io.EOF) && got < len(p))) {
		t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d", off, n, got, err, len(want))
	}
	if !bytes.Equal(p[:got], want) {
		t.Fatalf("ReadAt(%d, %d): wrong bytes", off, n)
	}
}

func TestReadThroughThenHit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{})
		src := &memSource{data: randBytes(1*mib+123, 1)}
		f := b.Open("v1", int64(len(src.data)), src)
		fetches := func() int64 { synctest.Wait(); return b.Stats().Fetches }
		readAt(t, f, src.data, 100*kib, 300*kib)
		if fetches() != 1 {
			t.Errorf("%d fetches for one read of consecutive blocks, want 1", fetches())
		}
		if got, want := src.asked(), int64(6*64*kib); got != want {
			t.Errorf("asked for %d bytes, want the %d of the blocks touched", got, want)
		}
		// The fetch began where the read did; the head of its first
		// block came last.
		if r := src.ranges; len(r) != 2 || r[0] != [2]int64{100 * kib, 348 * kib} || r[1] != [2]int64{64 * kib, 36 * kib} {
			t.Errorf("ranges asked %v, want the read's bytes first, then the head of the block", r)
		}
		readAt(t, f, src.data, 128*kib, 200*kib)
		if fetches() != 1 {
			t.Errorf("cached blocks fetched again")
		}
		// The short last block and EOF.
		readAt(t, f, src.data, int64(len(src.data))-100, 4096)
		p := make([]byte, 10)
		if n, err := f.ReadAt(t.Context(), p, int64(len(src.data))); n != 0 || err != io.EOF {
			t.Errorf("read at EOF = %d, %v", n, err)
		}
		// Another File of the same version shares the blocks; another
		// version does not.
		readAt(t, b.Open("v1", int64(len(src.data)), src), src.data, 100*kib, 300*kib)
		if fetches() != 2 { // only the last block read above was new
			t.Errorf("%d fetches, want 2", fetches())
		}
		readAt(t, b.Open("v2", int64(len(src.data)), src), src.data, 100*kib, 300*kib)
		if fetches() != 3 {
			t.Errorf("another version was served from the cache")
		}
	})
}

// TestReaderWaitsForItsBytesOnly: a reader of the start of a block being
// fetched gets its bytes before the rest of the block has arrived.
func TestReaderWaitsForItsBytesOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{BlockSize: 256 * kib})
		src := &slowSource{memSource: memSource{data: randBytes(mib, 12)}, gate: make(chan struct{})}
		f := b.Open("v", int64(len(src.data)), src)
		done := make(chan struct{})
		go func() { readAt(t, f, src.data, 300*kib, 10*kib); close(done) }() // block 1, from 300 KiB
		synctest.Wait()
		src.gate <- struct{}{} // the first 32 KiB of the body: enough for the reader
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("the reader still waits although its bytes arrived")
		}
		// A second reader of another part of the block waits for it.
		done2 := make(chan struct{})
		go func() { readAt(t, f, src.data, 400*kib, 10*kib); close(done2) }()
		synctest.Wait()
		select {
		case <-done2:
			t.Fatal("a reader got bytes that had not arrived")
		default:
		}
		close(src.gate)
		<-done2
	})
}

// slowSource sends 32 KiB per receive from gate (everything once closed).
type slowSource struct {
	memSource
	gate chan struct{}
}

func (s *slowSource) CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	end := min(off+n, int64(len(s.data)))
	var done int64
	for pos := off; pos < end; pos += 32 * kib {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return done, ctx.Err()
		}
		c, err := w.Write(s.data[pos:min(pos+32*kib, end)])
		done += int64(c)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func TestSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{})
		src := &memSource{data: randBytes(1*mib, 2)}
		release := make(chan struct{})
		src.hook = func(ctx context.Context, off, n int64) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		var wg sync.WaitGroup
		for i := range 8 {
			f := b.Open("v", int64(len(src.data)), src) // one File per reader, as fs does
			wg.Go(func() { readAt(t, f, src.data, int64(i)*1000, 64*kib) })
		}
		synctest.Wait() // all eight wait
		close(release)
		wg.Wait()
		if asked := src.asked(); asked != 128*kib {
			t.Errorf("8 readers of blocks 0-1 asked for %d bytes (%v), want each block once", asked, src.ranges)
		}
	})
}

func TestReaderGivesUpFetchCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{})
		src := &memSource{data: randBytes(1*mib, 3)}
		src.hook = func(ctx context.Context, off, n int64) error { <-ctx.Done(); return ctx.Err() }
		f := b.Open("v", int64(len(src.data)), src)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { _, err := f.ReadAt(ctx, make([]byte, 10), 0); done <- err }()
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("ReadAt = %v, want context.Canceled", err)
		}
		synctest.Wait()
		if src.cancelled != 1 || b.Stats().Cancelled != 1 {
			t.Errorf("the fetch nobody wants was not cancelled (%d, %+v)", src.cancelled, b.Stats())
		}
		// The next reader fetches afresh.
		src.hook = nil
		readAt(t, f, src.data, 0, 10)
	})
}

func TestFetchErrorReachesReaders(t *testing.T) {
	b := newBlocks(t, Options{})
	src := &memSource{data: randBytes(256*kib, 4)}
	boom := errors.New("swift is down")
	src.hook = func(context.Context, int64, int64) error { return boom }
	f := b.Open("v", int64(len(src.data)), src)
	if _, err := f.ReadAt(t.Context(), make([]byte, 10), 0); !errors.Is(err, boom) {
		t.Fatalf("ReadAt = %v, want the source's error", err)
	}
	src.hook = nil // failures are not cached
	readAt(t, f, src.data, 0, 10)
}

func TestLRUEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := int64(64 * kib)
		b := newBlocks(t, Options{BlockSize: bs, Memory: 4 * bs})
		src := &memSource{data: randBytes(int(6*bs), 5)}
		f := b.Open("v", int64(len(src.data)), src)
		for i := range int64(6) {
			readAt(t, f, src.data, i*bs, 10)
			synctest.Wait() // the block is published after its reader has its bytes
		}
		if st := b.Stats(); st.MemBytes != 4*bs {
			t.Errorf("memory holds %d bytes, want the budget %d", st.MemBytes, 4*bs)
		}
		readAt(t, f, src.data, 5*bs, 10) // most recent: cached
		readAt(t, f, src.data, 2*bs, 10) // oldest of the kept: cached, now recent
		if src.calls() != 6 {
			t.Fatalf("%d fetches, want 6", src.calls())
		}
		readAt(t, f, src.data, 0, 10) // evicted: fetched again, evicts block 3
		synctest.Wait()
		readAt(t, f, src.data, 2*bs, 10)
		if src.calls() != 7 {
			t.Errorf("%d fetches, want 7 (block 0 again only)", src.calls())
		}
		readAt(t, f, src.data, 3*bs, 10)
		if src.calls() != 8 {
			t.Errorf("%d fetches, want 8 (block 3 was least recently used)", src.calls())
		}
	})
}

// TestMemoryBudgetHolds reads a file much larger than the budget through
// several streams at once: the cache never holds more than its budget.
func TestMemoryBudgetHolds(t *testing.T) {
	bs := int64(64 * kib)
	b := newBlocks(t, Options{BlockSize: bs, Memory: 2 * mib})
	src := &memSource{data: randBytes(16*mib, 6)}
	var max int64
	var mu sync.Mutex
	src.hook = func(context.Context, int64, int64) error {
		b.mu.Lock()
		m := b.mem.cached() + b.mem.reserved
		b.mu.Unlock()
		mu.Lock()
		max = maxInt(max, m)
		mu.Unlock()
		return nil
	}
	var wg sync.WaitGroup
	for i := range 4 {
		s := b.Open("v", int64(len(src.data)), src).NewStream(StreamOptions{Max: 4 * mib, Chunk: 256 * kib})
		wg.Go(func() {
			defer s.Close()
			for off := int64(i) * kib; off < int64(len(src.data)); off += 128 * kib {
				readAt(t, s, src.data, off, 128*kib)
			}
		})
	}
	wg.Wait()
	if max > 2*mib+4*128*kib { // a demand fetch may exceed it by what the readers ask for
		t.Errorf("cache held %d bytes, budget 2 MiB", max)
	}
	if st := b.Stats(); st.MemBytes > 2*mib {
		t.Errorf("memory holds %d bytes", st.MemBytes)
	}
}

func maxInt(a, b int64) int64 { return max(a, b) }

func TestCloseStopsFetches(t *testing.T) {
	b, err := New(Options{BlockSize: 64 * kib, Memory: 8 * mib})
	if err != nil {
		t.Fatal(err)
	}
	src := &memSource{data: randBytes(4*mib, 7)}
	started := make(chan struct{}, 100)
	src.hook = func(ctx context.Context, off, n int64) error { started <- struct{}{}; <-ctx.Done(); return ctx.Err() }
	s := b.Open("v", int64(len(src.data)), src).NewStream(StreamOptions{})
	go s.ReadAt(context.Background(), make([]byte, 64*kib), 0)
	<-started
	b.Close() // cancels and waits; goleak checks nothing is left
	s.Close()
	if _, err := s.ReadAt(t.Context(), make([]byte, 10), 0); err == nil {
		t.Error("read after Close succeeded")
	}
}

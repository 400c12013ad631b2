package cache

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
)

// readSeq reads [from, to) in steps through s, waiting for the prefetches
// to settle after each read (inside a synctest bubble).
func readSeq(t *testing.T, s *Stream, data []byte, from, to, step int64) {
	t.Helper()
	for off := from; off < to; off += step {
		readAt(t, s, data, off, step)
		synctest.Wait()
	}
}

func TestStreamSequentialGrows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 128 * mib})
		src := &memSource{data: randBytes(64*mib, 20)}
		s := b.Open("v", int64(len(src.data)), src).NewStream(StreamOptions{Initial: mib, Max: 16 * mib, Chunk: 4 * mib})
		defer s.Close()
		var maxAhead int64
		for off := int64(0); off < int64(len(src.data)); off += mib {
			readAt(t, s, src.data, off, mib)
			synctest.Wait()
			src.mu.Lock()
			for _, r := range src.ranges {
				maxAhead = max(maxAhead, r[0]+r[1]-(off+mib))
			}
			src.mu.Unlock()
		}
		st := b.Stats()
		if src.fetched() != int64(len(src.data)) {
			t.Errorf("fetched %d bytes of a %d byte file read once", src.fetched(), len(src.data))
		}
		if first := src.ranges[0]; first[1] > mib {
			t.Errorf("the first fetch asked for %d bytes: not small", first[1])
		}
		var biggest int64
		for _, r := range src.ranges {
			biggest = max(biggest, r[1])
		}
		if biggest != 4*mib {
			t.Errorf("largest fetch %d bytes, want the 4 MiB chunk", biggest)
		}
		if maxAhead < 8*mib || maxAhead > 16*mib+4*mib {
			t.Errorf("prefetch ran at most %d bytes ahead; want the window to grow to about 16 MiB", maxAhead)
		}
		if demand := st.Fetches - st.Prefetches; demand > 3 { // the reads before the stream is confirmed
			t.Errorf("%d demand fetches in a sequential read: prefetch did not keep ahead (%+v)", demand, st)
		}
		if st.Cancelled != 0 {
			t.Errorf("%d fetches cancelled in a sequential read", st.Cancelled)
		}
	})
}

func TestStreamRandomNotAmplified(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := int64(64 * kib)
		b := newBlocks(t, Options{BlockSize: bs, Memory: 128 * mib})
		src := &memSource{data: randBytes(256*mib, 21)}
		s := b.Open("v", int64(len(src.data)), src).NewStream(StreamOptions{})
		defer s.Close()
		r := rand.New(rand.NewPCG(1, 2))
		blocks := map[int64]bool{}
		for range 200 {
			off := r.Int64N(int64(len(src.data))-64*kib) / 4096 * 4096
			readAt(t, s, src.data, off, 64*kib)
			synctest.Wait()
			for i := off / bs; i <= (off+64*kib-1)/bs; i++ {
				blocks[i] = true
			}
		}
		if st := b.Stats(); st.Prefetches != 0 {
			t.Errorf("%d prefetches for random reads", st.Prefetches)
		}
		if got, want := src.fetched(), int64(len(blocks))*bs; got != want {
			t.Errorf("fetched %d bytes for random reads, want the %d of the blocks they touch", got, want)
		}
	})
}

func TestStreamSeekCancelsPrefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 128 * mib})
		src := &memSource{data: randBytes(64*mib, 22)}
		src.hook = func(ctx context.Context, off, n int64) error {
			if off >= 3*mib && off < 32*mib { // prefetches hang until cancelled
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}
		s := b.Open("v", int64(len(src.data)), src).NewStream(StreamOptions{Initial: mib, Chunk: mib})
		defer s.Close()
		readSeq(t, s, src.data, 0, 3*mib, mib)
		if st := b.Stats(); st.Prefetches == 0 {
			t.Fatal("no prefetch after three sequential reads")
		}
		readAt(t, s, src.data, 40*mib, 64*kib) // seek
		synctest.Wait()
		st := b.Stats()
		if src.cancelled == 0 || st.Cancelled == 0 {
			t.Errorf("the seek cancelled no prefetch (%+v)", st)
		}
		b.mu.Lock()
		inflight, ahead := len(b.inflight), b.ahead
		b.mu.Unlock()
		if inflight != 0 || ahead != 0 {
			t.Errorf("after the seek: %d blocks in flight, %d bytes held ahead", inflight, ahead)
		}
	})
}

func TestStreamToleratesReordering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 128 * mib})
		src := &memSource{data: randBytes(48*mib, 23)}
		s := b.Open("v", int64(len(src.data)), src).NewStream(StreamOptions{Initial: mib, Max: 8 * mib, Chunk: 2 * mib})
		defer s.Close()
		// The kernel's async readahead: 1 MiB reads, pairs swapped, and
		// four in flight at once.
		for base := int64(0); base < int64(len(src.data)); base += 4 * mib {
			var wg sync.WaitGroup
			for _, k := range []int64{1, 0, 3, 2} {
				wg.Go(func() { readAt(t, s, src.data, base+k*mib, mib) })
			}
			wg.Wait()
			synctest.Wait()
		}
		st := b.Stats()
		if st.Cancelled != 0 {
			t.Errorf("reordered reads were taken for seeks: %d fetches cancelled", st.Cancelled)
		}
		if st.Prefetches == 0 || src.fetched() != int64(len(src.data)) {
			t.Errorf("prefetches %d, fetched %d of %d bytes", st.Prefetches, src.fetched(), len(src.data))
		}
	})
}

func TestStreamBudgetDropsPrefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 64 * mib, PrefetchMemory: 2 * mib})
		var wg sync.WaitGroup
		for i := range 4 {
			src := &memSource{data: randBytes(32*mib, uint64(30+i))}
			s := b.Open("v"+string(rune('a'+i)), int64(len(src.data)), src).NewStream(StreamOptions{Initial: mib, Max: 16 * mib, Chunk: mib})
			wg.Go(func() {
				defer s.Close()
				for off := int64(0); off < int64(len(src.data)); off += 512 * kib {
					readAt(t, s, src.data, off, 512*kib)
				}
			})
		}
		wg.Wait()
		st := b.Stats()
		if st.PrefetchDropped == 0 {
			t.Errorf("4 streams with 16 MiB windows fit a 2 MiB prefetch budget? %+v", st)
		}
		if b.ahead != 0 {
			t.Errorf("%d bytes still held ahead after the streams closed", b.ahead)
		}
	})
}

func TestStreamChunksStopAtSegments(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := int64(64 * kib)
		b := newBlocks(t, Options{BlockSize: bs, Memory: 128 * mib})
		src := &memSource{data: randBytes(40*mib, 24), seg: 3*mib + 100*kib} // segments not block aligned
		s := b.Open("v", int64(len(src.data)), src).NewStream(StreamOptions{Chunk: 8 * mib})
		defer s.Close()
		readSeq(t, s, src.data, 0, int64(len(src.data)), bs)
		for _, r := range src.ranges {
			bnd := src.Boundary(r[0])
			if limit := (bnd + bs - 1) / bs * bs; r[0]+r[1] > limit {
				t.Errorf("fetch [%d, %d) crosses the segment end %d by more than the straddling block", r[0], r[0]+r[1], bnd)
			}
		}
		if src.fetched() != int64(len(src.data)) {
			t.Errorf("fetched %d bytes, want %d", src.fetched(), len(src.data))
		}
	})
}

// TestIdleStreamPinsNoBudget: a stream that stops reading (a VM idle
// after booting) keeps no prefetch budget once its fetches are done, so
// other streams still prefetch.
func TestIdleStreamPinsNoBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 64 * mib, PrefetchMemory: 4 * mib})
		srcA := &memSource{data: randBytes(32*mib, 40)}
		a := b.Open("a", int64(len(srcA.data)), srcA).NewStream(StreamOptions{Initial: mib, Max: 4 * mib, Chunk: mib})
		defer a.Close()
		readSeq(t, a, srcA.data, 0, 8*mib, mib) // then idle, not closed
		b.mu.Lock()
		ahead := b.ahead
		b.mu.Unlock()
		if ahead != 0 {
			t.Errorf("an idle stream pins %d bytes of prefetch budget", ahead)
		}
		dropped := b.Stats().PrefetchDropped
		srcB := &memSource{data: randBytes(32*mib, 41)}
		s := b.Open("b", int64(len(srcB.data)), srcB).NewStream(StreamOptions{Initial: mib, Max: 4 * mib, Chunk: mib})
		defer s.Close()
		readSeq(t, s, srcB.data, 0, 8*mib, mib)
		if st := b.Stats(); st.PrefetchDropped != dropped {
			t.Errorf("another stream's prefetch was dropped %d times next to an idle one", st.PrefetchDropped-dropped)
		}
	})
}

package cache

import (
	"context"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// trickleSource writes its bytes in small pieces, and goes on writing a
// few of them after its context is cancelled, as a body still in flight
// does: a recycled buffer must never receive them.
type trickleSource struct{ data []byte }

func (s *trickleSource) CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	const piece = 4 << 10
	var done int64
	late := 3
	for done < n {
		if ctx.Err() != nil {
			if late == 0 {
				return done, ctx.Err()
			}
			late--
		}
		c := min(piece, n-done)
		m, err := w.Write(s.data[off+done : off+done+c])
		done += int64(m)
		if err != nil {
			return done, err
		}
		if done%(64<<10) == 0 {
			runtime.Gosched()
		}
	}
	return done, nil
}

func (s *trickleSource) Boundary(off int64) int64 { return int64(len(s.data)) }

// Readers of an image many times the memory tier, at random and in
// streams, cancelling some of their reads, with a disk tier, always get
// the image's bytes while block buffers are recycled.
func TestBuffersRecycledSafely(t *testing.T) {
	data := randBytes(16*mib+3*kib, 31)
	for _, dir := range []string{"", t.TempDir()} {
		b := newBlocks(t, Options{BlockSize: 64 * kib, Memory: 2 * mib, Dir: dir, DirSize: 4 * mib})
		f := b.Open("v", int64(len(data)), &trickleSource{data: data})
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 7))
				s := f.NewStream(StreamOptions{Initial: 256 * kib, Max: 1 * mib, Chunk: 256 * kib})
				defer s.Close()
				buf := make([]byte, 300*kib)
				off := int64(0)
				deadline := time.Now().Add(2 * time.Second)
				for time.Now().Before(deadline) {
					if g%2 == 0 || rng.IntN(8) == 0 { // random, or a seek
						off = rng.Int64N(int64(len(data)))
					}
					n := 1 + rng.Int64N(int64(len(buf)))
					ctx, cancel := context.WithCancel(context.Background())
					if rng.IntN(10) == 0 {
						cancel() // gives up at once: its fetches go on for others, or stop
					}
					got, err := s.ReadAt(ctx, buf[:n], off)
					cancel()
					if err != nil && err != io.EOF && ctx.Err() == nil {
						t.Errorf("read at %d: %v", off, err)
						return
					}
					if ctx.Err() == nil && string(buf[:got]) != string(data[off:off+int64(got)]) {
						t.Errorf("read of %d bytes at %d: wrong bytes", got, off)
						return
					}
					off = (off + int64(got)) % int64(len(data))
				}
			})
		}
		wg.Wait()
		if s := b.Stats(); s.BuffersReused == 0 {
			t.Errorf("dir %q: no buffer reused: %+v", dir, s)
		}
	}
}

package segments_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imagefs/imagefs/segments"
)

// TestCopyRangeAcrossSegments: CopyRange writes exactly the bytes asked
// for, in order, one GET per segment piece, into a plain io.Writer too;
// Boundary names the segment ends.
func TestCopyRangeAcrossSegments(t *testing.T) {
	st := newFake(t)
	data := randBytes(3*mib, 50)
	var segs []segments.Segment
	for i, cut := range [][2]int{{0, mib + 5}, {mib + 5, 2*mib - 7}, {2*mib - 7, 3 * mib}} {
		name := string(rune('a' + i))
		etag, err := st.Put(t.Context(), "c", name, bytes.NewReader(data[cut[0]:cut[1]]), int64(cut[1]-cut[0]), "", segments.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, segments.Segment{Container: "c", Object: name, ETag: etag, Length: int64(cut[1] - cut[0])})
	}
	r := segments.NewReader(st, segments.NewManifest(segs, "v"), segments.ReaderOptions{})
	var buf bytes.Buffer
	n, err := r.CopyRange(t.Context(), &buf, mib, mib+100)
	if err != nil || n != mib+100 || !bytes.Equal(buf.Bytes(), data[mib:2*mib+100]) {
		t.Fatalf("CopyRange = %d, %v; bytes equal %v", n, err, bytes.Equal(buf.Bytes(), data[mib:2*mib+100]))
	}
	if got := st.Calls("GET"); got != 3 {
		t.Errorf("%d GETs for a range over three segments, want 3", got)
	}
	for _, tc := range [][2]int64{{0, mib + 5}, {mib + 4, mib + 5}, {mib + 5, 2*mib - 7}, {3*mib - 1, 3 * mib}, {3 * mib, 3 * mib}} {
		if got := r.Boundary(tc[0]); got != tc[1] {
			t.Errorf("Boundary(%d) = %d, want %d", tc[0], got, tc[1])
		}
	}
	// Past the end: cut, no error; ReadAt says EOF.
	buf.Reset()
	if n, err := r.CopyRange(t.Context(), &buf, 3*mib-10, 100); n != 10 || err != nil {
		t.Errorf("CopyRange past the end = %d, %v", n, err)
	}
	if n, err := r.ReadAt(t.Context(), make([]byte, 100), 3*mib-10); n != 10 || err != io.EOF {
		t.Errorf("ReadAt past the end = %d, %v", n, err)
	}
}

// stallStore's bodies send stallAfter bytes and then nothing, until the
// request is cancelled, for the first `times` GETs.
type stallStore struct {
	segments.ObjectStore
	stallAfter int64
	times      atomic.Int64
}

func (s *stallStore) Get(ctx context.Context, c, o string, off, n int64, ifMatch string) (io.ReadCloser, error) {
	rc, err := s.ObjectStore.Get(ctx, c, o, off, n, ifMatch)
	if err != nil || s.times.Add(-1) < 0 {
		return rc, err
	}
	return io.NopCloser(io.MultiReader(io.LimitReader(rc, s.stallAfter), &hang{ctx})), nil
}

type hang struct{ ctx context.Context }

func (h *hang) Read([]byte) (int, error) { <-h.ctx.Done(); return 0, h.ctx.Err() }

// TestReaderCutsStalledBody: a body that stops sending is cut after the
// stall timeout and the read resumes where it stopped.
func TestReaderCutsStalledBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFake(t)
		data := randBytes(2*mib, 51)
		if _, err := st.Put(t.Context(), "c", "o", bytes.NewReader(data), int64(len(data)), "", segments.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		m, _, err := segments.Resolve(t.Context(), st, "c", "o")
		if err != nil {
			t.Fatal(err)
		}
		stall := &stallStore{ObjectStore: st, stallAfter: 300 << 10}
		stall.times.Store(2)
		var logs bytes.Buffer
		r := segments.NewReader(stall, m, segments.ReaderOptions{StallTimeout: 10 * time.Second,
			Retry: segments.RetryPolicy{Base: time.Millisecond, Cap: time.Millisecond, Budget: time.Minute},
			Log:   slog.New(slog.NewTextHandler(&logs, nil))})
		start := time.Now()
		buf := make([]byte, len(data))
		if n, err := r.ReadAt(t.Context(), buf, 0); err != nil || n != len(data) || !bytes.Equal(buf, data) {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		if el := time.Since(start); el < 20*time.Second || el > 21*time.Second {
			t.Errorf("two stalls of a 10 s timeout took %v", el)
		}
		if n := strings.Count(logs.String(), "response body stalled"); n != 2 {
			t.Errorf("%d stalls logged, want 2:\n%s", n, logs.String())
		}
		if got := st.Calls("GET"); got != 3 {
			t.Errorf("%d GETs, want 3 (two cut, one resumed to the end)", got)
		}
	})
}

// TestReaderCallerCancel: the caller's cancellation ends a read at once,
// as context.Canceled (not a stall, not retried).
func TestReaderCallerCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFake(t)
		data := randBytes(mib, 52)
		st.Put(t.Context(), "c", "o", bytes.NewReader(data), int64(len(data)), "", segments.PutOptions{})
		m, _, _ := segments.Resolve(t.Context(), st, "c", "o")
		stall := &stallStore{ObjectStore: st, stallAfter: 100}
		stall.times.Store(1)
		r := segments.NewReader(stall, m, segments.ReaderOptions{StallTimeout: time.Hour})
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(time.Second, cancel)
		_, err := r.ReadAt(ctx, make([]byte, mib), 0)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ReadAt after cancel = %v", err)
		}
	})
}

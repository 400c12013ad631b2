package segments

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"
)

func TestRetryCause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&StatusError{Code: 503}, "503"},
		{fmt.Errorf("put: %w", &StatusError{Code: 401}), "401"},
		{&TransportError{Err: errStalled}, "stalled"},
		{errShortBody, "short_body"},
		{context.DeadlineExceeded, "timeout"},
		{&TransportError{Err: syscall.ECONNRESET}, "connection"},
	} {
		if got := RetryCause(tc.err); got != tc.want {
			t.Errorf("RetryCause(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// Retries are counted by operation and cause; the final success or
// failure is not a retry.
func TestRetryCounts(t *testing.T) {
	c := &RetryCounts{}
	p := RetryPolicy{Base: time.Millisecond, Cap: time.Millisecond, Budget: time.Second, Counts: c}
	n := 0
	err := p.Do(t.Context(), nil, "PUT", "c/o", func(context.Context) error {
		n++
		switch n {
		case 1, 2:
			return &StatusError{Code: 503}
		case 3:
			return &TransportError{Err: syscall.ECONNRESET}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Do(t.Context(), nil, "HEAD", "c/o", func(context.Context) error { return &StatusError{Code: 404} })
	got := c.Snapshot()
	want := map[RetryKey]int64{{"PUT", "503"}: 2, {"PUT", "connection"}: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v", got, want)
	}
}

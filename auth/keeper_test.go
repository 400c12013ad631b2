package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeIssuer hands out numbered tokens of a fixed lifetime, on the fake
// clock of a synctest bubble.
type fakeIssuer struct {
	lifetime time.Duration
	delay    time.Duration        // how long Keystone takes
	fail     func(call int) error // nil or nil result: success
	deadline time.Time            // HardDeadline of the credentials
	final    func(c *Credential) bool

	mu    sync.Mutex
	calls []time.Time // when each issue started
}

func (f *fakeIssuer) issue(ctx context.Context, prev *Credential) (*Credential, error) {
	f.mu.Lock()
	f.calls = append(f.calls, time.Now())
	n := len(f.calls)
	f.mu.Unlock()
	sent := time.Now()
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.fail != nil {
		if err := f.fail(n); err != nil {
			return nil, err
		}
	}
	c := &Credential{Token: Secret(fmt.Sprintf("tok-%d", n)), StorageURL: "http://swift.example/v1/AUTH_p",
		Lifetime: f.lifetime, Issued: sent, Expires: sent.Add(f.lifetime), HardDeadline: f.deadline}
	if f.final != nil {
		c.Final = f.final(c)
	}
	return c, nil
}

func (f *fakeIssuer) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

// logBuffer is a concurrency-safe log sink for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func newTestKeeper(t *testing.T, iss issuer, cfg Config) (*Keeper, *logBuffer) {
	t.Helper()
	log, lb := testLogger()
	if cfg.Mode == "" {
		cfg.Mode = ModePassword
	}
	k, err := newKeeper(t.Context(), cfg, log, iss)
	if err != nil {
		t.Fatal(err)
	}
	return k, lb
}

// runKeeper starts Run and returns a function that stops it and waits.
func runKeeper(k *Keeper) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = k.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func TestRenewMarginBounds(t *testing.T) {
	for _, tc := range []struct {
		lifetime         time.Duration
		earliest, latest time.Duration // renewal after issue
	}{
		{2 * time.Minute, 54 * time.Second, 60 * time.Second},
		{10 * time.Minute, 4*time.Minute + 30*time.Second, 5 * time.Minute}, // half, minus 5%
		{time.Hour, 51 * time.Minute, 54 * time.Minute},
		{24 * time.Hour, 20*time.Hour + 24*time.Minute, 21*time.Hour + 36*time.Minute},
	} {
		for range 2000 {
			at := tc.lifetime - renewMargin(tc.lifetime, 5*time.Minute)
			if at < tc.earliest || at > tc.latest {
				t.Fatalf("lifetime %v: renews after %v, want within [%v, %v]", tc.lifetime, at, tc.earliest, tc.latest)
			}
		}
	}
}

// TestRunRenewsBeforeExpiry runs the keeper for ten lifetimes of 2-minute
// and 24-hour tokens on a fake clock: every renewal happens in the planned
// window and a request never waits.
func TestRunRenewsBeforeExpiry(t *testing.T) {
	for _, tc := range []struct {
		l                time.Duration
		minLeft          time.Duration // least time left on a token in use
		gapLo, gapHi     time.Duration // between renewals
		renewLo, renewHi int           // renewals in 10 lifetimes
	}{
		{2 * time.Minute, 60 * time.Second, 54 * time.Second, 60 * time.Second, 19, 22},
		{24 * time.Hour, 144 * time.Minute, 20*time.Hour + 24*time.Minute, 21*time.Hour + 36*time.Minute, 11, 11},
	} {
		t.Run(tc.l.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				iss := &fakeIssuer{lifetime: tc.l, delay: 20 * time.Millisecond}
				k, _ := newTestKeeper(t, iss, Config{})
				stop := runKeeper(k)
				defer stop()
				start := time.Now()
				for time.Since(start) < 10*tc.l {
					// A request every l/100: it must never wait, and its
					// token must have the renewal margin left.
					ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
					c, err := k.Wait(ctx)
					cancel()
					if err != nil {
						t.Fatalf("at %v: Wait: %v", time.Since(start), err)
					}
					if left := time.Until(c.Expires); left < tc.minLeft-time.Second {
						t.Fatalf("at %v: token with %v left in use", time.Since(start), left)
					}
					time.Sleep(tc.l / 100)
				}
				calls := iss.callTimes()
				if n := len(calls) - 1; n < tc.renewLo || n > tc.renewHi {
					t.Errorf("%d renewals in 10 lifetimes, want %d-%d", n, tc.renewLo, tc.renewHi)
				}
				for i := 1; i < len(calls); i++ {
					// The keeper measures from the send time; the fake
					// Keystone takes 20 ms.
					gap := calls[i].Sub(calls[i-1])
					if gap < tc.gapLo || gap > tc.gapHi+time.Second {
						t.Errorf("renewal %d came %v after the previous one, want [%v, %v]", i, gap, tc.gapLo, tc.gapHi)
					}
				}
				if s := k.Stats(); s.Renewals != int64(len(calls)-1) || s.Failures != 0 {
					t.Errorf("stats %+v", s)
				}
			})
		})
	}
}

// TestInvalidateSingleFlight: fifty requests that saw a 401 at once cause
// one request to Keystone; a late one for the same token causes none.
func TestInvalidateSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := &fakeIssuer{lifetime: time.Hour, delay: 300 * time.Millisecond}
		k, _ := newTestKeeper(t, iss, Config{})
		time.Sleep(time.Minute) // older than minTokenAge
		var wg sync.WaitGroup
		gens := make(chan uint64, 50)
		for range 50 {
			wg.Go(func() {
				c, err := k.Invalidate(context.Background(), 1)
				if err != nil {
					t.Error(err)
					return
				}
				gens <- c.Gen
			})
		}
		wg.Wait()
		close(gens)
		for g := range gens {
			if g != 2 {
				t.Errorf("a caller got generation %d, want 2", g)
			}
		}
		if n := len(iss.callTimes()); n != 2 {
			t.Fatalf("%d calls to Keystone, want 2 (New and one renewal)", n)
		}
		if _, err := k.Invalidate(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		if n := len(iss.callTimes()); n != 2 {
			t.Errorf("a superseded Invalidate asked Keystone again (%d calls)", n)
		}
	})
}

// TestInvalidateCallerCancelDoesNotAbortRenewal: the renewal serves all
// waiters, so one caller giving up does not cancel it.
func TestInvalidateCallerCancelDoesNotAbortRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := &fakeIssuer{lifetime: time.Hour, delay: time.Second}
		k, _ := newTestKeeper(t, iss, Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := k.Invalidate(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Invalidate: %v, want the caller's deadline", err)
		}
		time.Sleep(2 * time.Second)
		if g := k.Current().Gen; g != 2 {
			t.Errorf("generation %d after the renewal, want 2", g)
		}
	})
}

// TestKeystoneOutage: while Keystone fails, the keeper keeps the current
// token, retries with a backoff bounded by the lifetime, lets requests
// through while the token has time left, holds them when it is about to
// expire, and releases them at the first successful renewal.
func TestKeystoneOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const l = 2 * time.Minute
		var down sync.Mutex
		outage := true
		iss := &fakeIssuer{lifetime: l, fail: func(n int) error {
			down.Lock()
			defer down.Unlock()
			if n > 1 && outage {
				return fmt.Errorf("%w: connection refused", ErrUnreachable)
			}
			return nil
		}}
		k, lb := newTestKeeper(t, iss, Config{})
		stop := runKeeper(k)
		defer stop()
		first := k.Current()

		// Until 30 s before expiry (a quarter of the lifetime) requests go
		// through with the old token.
		time.Sleep(l - l/4 - time.Second)
		c, err := k.Wait(context.Background())
		if err != nil || c != first {
			t.Fatalf("Wait during the outage: %v, %v", c, err)
		}
		// Then they wait...
		time.Sleep(2 * time.Second)
		released := make(chan *Credential)
		go func() {
			c, err := k.Wait(context.Background())
			if err != nil {
				t.Error(err)
			}
			released <- c
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := k.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait with the token about to expire returned %v, want to block", err)
		}
		cancel()
		// ...until Keystone is back and the keeper renews.
		down.Lock()
		outage = false
		down.Unlock()
		c = <-released
		if c.Gen != 2 {
			t.Errorf("released with generation %d", c.Gen)
		}
		calls := iss.callTimes()
		// Attempts from 54-60 s on, backoff capped at l/20 = 6 s.
		for i := 2; i < len(calls); i++ {
			if gap := calls[i].Sub(calls[i-1]); gap > l/20+time.Millisecond {
				t.Errorf("backoff %v between attempts %d and %d, want at most %v", gap, i-1, i, l/20)
			}
		}
		if s := k.Stats(); s.Failures < 5 || s.Renewals != 1 {
			t.Errorf("stats %+v", s)
		}
		if !strings.Contains(lb.String(), "still using the current token") {
			t.Errorf("no outage warning in the log:\n%s", lb)
		}
	})
}

// TestFallbackToPreviousToken: Swift refuses a fresh token while Keystone
// is down; the keeper uses the previous one while it is valid, and stops
// when that one is refused too or nearly expired.
func TestFallbackToPreviousToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const l = 2 * time.Minute
		var mu sync.Mutex
		down := false
		iss := &fakeIssuer{lifetime: l, fail: func(int) error {
			mu.Lock()
			defer mu.Unlock()
			if down {
				return ErrUnreachable
			}
			return nil
		}}
		k, lb := newTestKeeper(t, iss, Config{})
		time.Sleep(time.Minute)
		if _, err := k.renew(context.Background(), 1, "test", true); err != nil {
			t.Fatal(err)
		}
		prev, cur := k.prev, k.Current()
		mu.Lock()
		down = true
		mu.Unlock()

		// A fresh token refused: no Keystone call (too young), fallback.
		time.Sleep(time.Second)
		k.rejected(context.Background(), cur)
		if a := k.active(); a != prev {
			t.Fatalf("active is gen %d, want the previous token", a.Gen)
		}
		if len(iss.callTimes()) != 2 {
			t.Errorf("a 401 on a fresh token asked Keystone")
		}
		// Wait hands out the fallback without blocking.
		if c, err := k.Wait(context.Background()); err != nil || c != prev {
			t.Errorf("Wait: %v %v", c, err)
		}
		// The fallback ends before the previous token expires.
		time.Sleep(time.Until(prev.Expires) - fallbackMargin(prev) + time.Millisecond)
		if a := k.active(); a != cur {
			t.Errorf("still falling back %v before the previous token expires", time.Until(prev.Expires))
		}
		if k.Stats().Fallbacks != 1 || !strings.Contains(lb.String(), "using the previous token") {
			t.Errorf("fallback not counted or logged: %+v", k.Stats())
		}
	})
}

func TestFallbackEndsWhenPreviousRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := &fakeIssuer{lifetime: time.Hour}
		k, _ := newTestKeeper(t, iss, Config{})
		time.Sleep(time.Minute)
		k.renew(context.Background(), 1, "test", true)
		prev, cur := k.prev, k.Current()
		iss.fail = func(int) error { return ErrUnreachable }
		time.Sleep(time.Minute) // old enough to try a renewal, which fails
		k.rejected(context.Background(), cur)
		if k.active() != prev {
			t.Fatal("no fallback after the renewal failed")
		}
		if len(iss.callTimes()) != 3 {
			t.Errorf("%d Keystone calls, want 3", len(iss.callTimes()))
		}
		k.rejected(context.Background(), prev)
		if k.active() != cur {
			t.Error("still using the previous token after Swift refused it")
		}
		// Not again for the same generation: no ping-pong.
		k.rejected(context.Background(), cur)
		if k.active() != cur {
			t.Error("fell back twice for one generation")
		}
		if r := k.Stats().Rejections; r != 3 {
			t.Errorf("%d rejections counted, want 3", r)
		}
	})
}

// TestFinalTokenIsNotRenewedEarly: an application credential's last token
// (capped at its expiry) is not renewed again and again as it shortens;
// requests do not wait for a renewal that cannot come; the expiry is
// reported.
func TestFinalTokenIsNotRenewedEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Minute)
		iss := &fakeIssuer{lifetime: 10 * time.Minute, deadline: deadline,
			final: func(c *Credential) bool { return !c.Expires.Before(c.HardDeadline) }}
		k, lb := newTestKeeper(t, iss, Config{Mode: ModeAppCredential, ExpiryWarning: time.Hour})
		if !strings.Contains(lb.String(), "application credential expires soon") {
			t.Errorf("no warning at start:\n%s", lb)
		}
		iss.fail = func(n int) error {
			if time.Now().Before(deadline) {
				return nil
			}
			return ErrCredentials
		}
		stop := runKeeper(k)
		defer stop()
		time.Sleep(9*time.Minute + 50*time.Second)
		if c, err := k.Wait(context.Background()); err != nil || c.Gen != 1 {
			t.Errorf("Wait near the end: %v %v", c, err)
		}
		if n := len(iss.callTimes()); n != 1 {
			t.Errorf("%d issues before the deadline, want 1", n)
		}
		time.Sleep(time.Minute)
		if !strings.Contains(lb.String(), "credentials expired") {
			t.Errorf("expiry not reported:\n%s", lb)
		}
	})
}

// TestDeadlineWarningsGetMoreFrequent: service-token mode warns within the
// last quarter of the allow-expired window, then more and more often.
func TestDeadlineWarningsGetMoreFrequent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := &fakeIssuer{lifetime: time.Hour, deadline: time.Now().Add(48 * time.Hour)}
		k, lb := newTestKeeper(t, iss, Config{Mode: ModeServiceToken, AllowExpiredWindow: 48 * time.Hour})
		stop := runKeeper(k)
		time.Sleep(35 * time.Hour)
		if strings.Contains(lb.String(), "level=WARN") {
			t.Errorf("warned more than 12 h before the window closes:\n%s", lb)
		}
		time.Sleep(13*time.Hour - time.Minute)
		stop()
		n := strings.Count(lb.String(), "the user token can be used only a little longer")
		if n < 4 || n > 13 {
			t.Errorf("%d warnings in the last 12 h, want a handful", n)
		}
	})
}

// TestFailedRenewalNotRetriedOnEvery401: after a failed renewal, 401s do
// not hammer Keystone (minTokenAge), while Run still retries on its own
// schedule.
func TestFailedRenewalNotRetriedOnEvery401(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := &fakeIssuer{lifetime: time.Hour}
		k, _ := newTestKeeper(t, iss, Config{})
		iss.fail = func(n int) error {
			if n > 1 {
				return ErrUnreachable
			}
			return nil
		}
		time.Sleep(time.Minute)
		for range 100 {
			if _, err := k.Invalidate(context.Background(), 1); err == nil {
				t.Fatal("Invalidate succeeded with Keystone down")
			}
		}
		if n := len(iss.callTimes()); n != 2 {
			t.Errorf("%d calls to Keystone for 100 401s within a second, want 2", n)
		}
		time.Sleep(minTokenAge)
		k.Invalidate(context.Background(), 1)
		if n := len(iss.callTimes()); n != 3 {
			t.Errorf("%d calls, want a new attempt after minTokenAge", n)
		}
	})
}

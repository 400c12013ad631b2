package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/imagefs/imagefs/auth"
)

func TestMetricsAddrValidation(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		remote bool
		want   string // "" = accepted
	}{
		{"", false, ""},
		{"127.0.0.1:9474", false, ""},
		{"[::1]:9474", false, ""},
		{"localhost:9474", false, ""},
		{"127.0.0.1:0", false, ""},
		{":9474", false, "has no host, which means every interface"},
		{"0.0.0.0:9474", false, "is not a loopback address"},
		{"10.1.2.3:9474", false, "or add --metrics-allow-remote"},
		{"10.1.2.3:9474", true, ""},
		{"127.0.0.1", false, "want HOST:PORT"},
		{"127.0.0.1:http", false, "the port must be a number"},
		{"127.0.0.1:70000", false, "the port must be a number"},
	} {
		m := MetricsConfig{Addr: tc.addr, AllowRemote: tc.remote}
		errs := m.validate()
		switch {
		case tc.want == "" && len(errs) != 0:
			t.Errorf("%q (remote %v): %v, want accepted", tc.addr, tc.remote, errs)
		case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want)):
			t.Errorf("%q (remote %v): %v, want an error saying %q", tc.addr, tc.remote, errs, tc.want)
		}
	}
}

func TestSocketPath(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/images":  "/run/imagefs/var-lib-images.sock",
		"/var/lib/images/": "/run/imagefs/var-lib-images.sock",
		"/":                "/run/imagefs/-.sock",
		"/mnt/my-images":   `/run/imagefs/mnt-my\x2dimages.sock`,
		"/mnt/a b/.x":      `/run/imagefs/mnt-a\x20b-.x.sock`,
	} {
		if got := socketPath(defaultRunDir, in); got != want {
			t.Errorf("socketPath(%q) = %q, want %q", in, got, want)
		}
	}
	long := "/" + strings.Repeat("d", 120)
	if got := socketPath(defaultRunDir, long); len(got) >= 100 || got == socketPath(defaultRunDir, long+"x") {
		t.Errorf("socketPath of a long mountpoint: %q", got)
	}
}

// The recent errors keep warnings and errors whatever the log level,
// with secrets redacted as in the log, and only the last recentMax.
func TestRecentLog(t *testing.T) {
	var out bytes.Buffer
	rl := &recentLog{}
	log := slog.New(&recentHandler{next: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}), log: rl})
	log = log.With("object", "a.img")
	log.Info("not kept")
	log.Warn("retrying", "token", auth.Secret("gAAAAAsecret"), "attempt", 1)
	if strings.Contains(out.String(), "retrying") {
		t.Errorf("a warning reached a handler at level error: %s", out.String())
	}
	e := rl.entries()
	if len(e) != 1 || e[0].Level != "WARN" || e[0].Msg != "retrying object=a.img token=REDACTED attempt=1" {
		t.Errorf("recent: %+v", e)
	}
	for i := range 2 * recentMax {
		log.Error("failed", "n", i)
	}
	e = rl.entries()
	if len(e) != recentMax || !strings.HasSuffix(e[recentMax-1].Msg, "n=19") || !strings.HasSuffix(e[0].Msg, "n=10") {
		t.Errorf("recent after %d errors: %+v", 2*recentMax, e)
	}
}

// The transport counts requests by method and code, and the bytes of
// the bodies both ways.
func TestCountingTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodPut {
			w.WriteHeader(http.StatusCreated)
			return
		}
		_, _ = w.Write([]byte("0123456789"))
	}))
	defer srv.Close()
	m := newMetrics()
	c := &http.Client{Transport: m.transport(http.DefaultTransport)}
	for range 2 {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPut, srv.URL, strings.NewReader("abcdef"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := c.Get("http://127.0.0.1:1/"); err == nil {
		t.Fatal("a GET of a closed port succeeded")
	}
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"PUT 201", counterValue(t, m.swiftRequests.WithLabelValues("PUT", "201")), 2},
		{"GET 200", counterValue(t, m.swiftRequests.WithLabelValues("GET", "200")), 1},
		{"GET error", counterValue(t, m.swiftRequests.WithLabelValues("GET", "error")), 1},
		{"sent", counterValue(t, m.swiftSent), 12},
		{"received", counterValue(t, m.swiftReceived), 10},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

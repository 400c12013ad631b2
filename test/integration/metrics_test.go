//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// TestMetricsScrapedByPrometheus: a real Prometheus (Debian's package)
// scrapes a mount's --metrics-addr every second while an image is copied
// in, through a proxy that fails one segment PUT with 503, and read back.
// Its query API then gives what the test did: the bytes through FUSE and
// to and from Swift, the PUTs answered 201, the one commit, the one
// retry with its cause, the cache misses, the seconds left on the token
// and on the application credential. Every metric the Grafana dashboard
// uses is in the daemon's /metrics.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	t.Parallel()
	const size = 20<<20 + 12345
	ttl := 3 * time.Hour
	acID, acSecret := labtest.NewAppCredential(t, ttl)
	c := labtest.NewContainer(t)
	fp := labtest.NewFaultProxy(t)
	var failed atomic.Bool
	fp.SetFault(func(r *http.Request) labtest.Fault {
		if labtest.IsSegmentPut(r) && strings.Contains(r.URL.Path, "/vm.img/") && failed.CompareAndSwap(false, true) {
			return labtest.Fault{Status: http.StatusServiceUnavailable}
		}
		return labtest.Fault{}
	})
	addr := freeAddr(t)
	d := labtest.Mount(t, c, labtest.MountOpts{
		Args: []string{"--metrics-addr", addr, "--segment-size", "4MiB", "--os-storage-url", fp.StorageURL},
		Env: []string{"OS_APPLICATION_CREDENTIAL_ID=" + acID, "OS_APPLICATION_CREDENTIAL_SECRET=" + string(acSecret),
			"OS_AUTH_TYPE=v3applicationcredential", "OS_USERNAME=", "OS_PASSWORD=", "OS_PROJECT_NAME="},
	})
	prom := startPrometheus(t, addr)

	src, sum := labtest.RandomFile(t, size, 71)
	labtest.RunCmd(t, "cp", src, d.Path("vm.img"))
	if got := labtest.SHA256File(t, d.Path("vm.img")); got != sum {
		t.Fatalf("read back sha256 %s, want %s", got, sum)
	}
	if !failed.Load() {
		t.Fatal("the proxy failed no segment PUT")
	}

	// The read is done: wait for a scrape that saw it.
	deadline := time.Now().Add(20 * time.Second)
	for prom.value(t, `imagefs_fuse_read_bytes_total`) < size {
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus has not seen the read within 20 s: up=%v", prom.value(t, `up`))
		}
		time.Sleep(500 * time.Millisecond)
	}
	atLeast := func(q string, want float64) {
		t.Helper()
		if got := prom.value(t, q); got < want {
			t.Errorf("%s = %v, want at least %v", q, got, want)
		}
	}
	exactly := func(q string, want float64) {
		t.Helper()
		if got := prom.value(t, q); got != want {
			t.Errorf("%s = %v, want %v", q, got, want)
		}
	}
	atLeast(`imagefs_fuse_written_bytes_total`, size)
	atLeast(`imagefs_swift_sent_bytes_total`, size+4<<20) // the failed PUT's body counts too
	atLeast(`imagefs_swift_received_bytes_total`, size)
	atLeast(`sum(imagefs_swift_requests_total{method="PUT",code="201"})`, 6) // 5 segments and the manifest
	exactly(`sum(imagefs_swift_requests_total{method="PUT",code="503"})`, 1)
	exactly(`imagefs_swift_retries_total{op="PUT",cause="503"}`, 1)
	exactly(`imagefs_commits_total{result="ok"}`, 1)
	exactly(`imagefs_commits_total{result="error"}`, 0)
	exactly(`imagefs_uploads_in_flight`, 0)
	atLeast(`imagefs_cache_misses_total`, size/(4<<20))
	atLeast(`imagefs_fuse_operation_duration_seconds_count{op="write"}`, size/(1<<20))
	atLeast(`imagefs_fuse_operation_duration_seconds_count{op="flush"}`, 1)
	exactly(`imagefs_write_memory_budget_bytes`, 5*4<<20)
	if got := prom.value(t, `imagefs_auth_token_expiry_seconds{mode="application-credential"}`); got <= 0 || got > ttl.Seconds() {
		t.Errorf("token expiry %v s, want between 0 and %v", got, ttl.Seconds())
	}
	if got := prom.value(t, `imagefs_auth_deadline_seconds{mode="application-credential"}`); got < ttl.Seconds()-300 || got > ttl.Seconds() {
		t.Errorf("application credential expiry %v s, want about %v", got, ttl.Seconds())
	}

	// The dashboard uses only metrics the daemon serves.
	body := httpGet(t, "http://"+addr+"/metrics")
	for _, name := range dashboardMetrics(t) {
		if !regexp.MustCompile(`(?m)^` + name + `(_bucket|_count|_sum)?[{ ]`).MatchString(body) {
			t.Errorf("contrib/grafana/imagefs.json uses %s, which the daemon's /metrics does not have", name)
		}
	}
	d.CheckNoSecrets(string(acSecret))
	if strings.Contains(body, string(acSecret)) || strings.Contains(body, "gAAAAA") {
		t.Error("/metrics shows a secret")
	}
}

// TestMetricsServiceTokenDeadline: in service-token mode the deadline in
// the metrics and in status is the end of the user token's allow-expired
// window: the user token's expiry (within a token lifetime from now) plus
// --allow-expired-window.
func TestMetricsServiceTokenDeadline(t *testing.T) {
	t.Parallel()
	const window = time.Hour
	c := labtest.NewContainerIn(t, labtest.ImageStore(t))
	addr := freeAddr(t)
	userTok := labtest.UserToken(t)
	d := labtest.Mount(t, c, labtest.MountOpts{
		Args: []string{"--metrics-addr", addr, "--allow-expired-window", window.String()},
		Env:  append(labtest.ServiceUserEnv(), "OS_TOKEN="+string(userTok), "OS_USERNAME=", "OS_PASSWORD="),
	})
	lo, hi := window.Seconds()-5, (window + labtest.TokenLifetime(t)).Seconds()
	body := httpGet(t, "http://"+addr+"/metrics")
	m := regexp.MustCompile(`(?m)^imagefs_auth_deadline_seconds\{mode="service-token"\} (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no imagefs_auth_deadline_seconds{mode=\"service-token\"} in /metrics")
	}
	if v, _ := strconv.ParseFloat(m[1], 64); v < lo || v > hi {
		t.Errorf("imagefs_auth_deadline_seconds = %v, want between %v and %v", v, lo, hi)
	}
	if !regexp.MustCompile(`(?m)^imagefs_auth_token_expiry_seconds\{mode="service-token"\} \d`).MatchString(body) {
		t.Error("no positive imagefs_auth_token_expiry_seconds{mode=\"service-token\"} in /metrics")
	}
	r := labtest.Exec(t, "status", d.Dir)
	if r.Code != 0 || !strings.Contains(r.Stdout, "auth: service-token") || !strings.Contains(r.Stdout, "user token's allow-expired window ends in") {
		t.Errorf("imagefs status: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if strings.Contains(body, string(userTok)) || strings.Contains(r.Stdout, string(userTok)) {
		t.Error("the user token shows in /metrics or status")
	}
	d.CheckNoSecrets(string(userTok))
}

// TestMetricsAddrRefused: a --metrics-addr that is not loopback, or a port
// in use, fails the mount with a clear error and nothing mounted.
func TestMetricsAddrRefused(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	labtest.MountFails(t, nil, []string{"--metrics-addr", ":9474", c, t.TempDir()}, 1,
		`--metrics-addr ":9474" has no host, which means every interface: use 127.0.0.1 or [::1]`)
	labtest.MountFails(t, nil, []string{"--metrics-addr", "192.0.2.1:9474", c, t.TempDir()}, 1,
		"or add --metrics-allow-remote")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	labtest.MountFails(t, nil, []string{"--metrics-addr", l.Addr().String(), c, t.TempDir()}, 1,
		"--metrics-addr "+l.Addr().String()+": cannot listen there")
}

// dashboardMetrics are the metric names the Grafana dashboard's queries
// use, histogram suffixes taken off.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "contrib", "grafana", "imagefs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("contrib/grafana/imagefs.json: %v", err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`imagefs_[a-z0-9_]+`).FindAllString(string(b), -1) {
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			if strings.HasPrefix(m, "imagefs_fuse_operation_duration_seconds") || strings.HasPrefix(m, "imagefs_swift_request_duration_seconds") {
				m = strings.TrimSuffix(m, suf)
			}
		}
		if !slices.Contains(names, m) {
			names = append(names, m)
		}
	}
	if len(names) < 10 {
		t.Fatalf("the dashboard uses only %d imagefs metrics: %v", len(names), names)
	}
	return names
}

// prometheus is a Prometheus server of the test's own.
type prometheus struct{ url string }

// startPrometheus runs Debian's prometheus with its own configuration and
// storage in temp dirs, scraping target every second.
func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed (apt-get install prometheus; test/run.sh installs it)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: imagefs\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	p := &prometheus{url: "http://" + listen}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// value is the single value of an instant query (0 when the result is
// empty: the metric was not scraped yet).
func (p *prometheus) value(t *testing.T, query string) float64 {
	t.Helper()
	body := httpGet(t, p.url+"/api/v1/query?query="+url.QueryEscape(query))
	var r struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s %s", query, err, r.Error, body)
	}
	switch len(r.Data.Result) {
	case 0:
		return 0
	case 1:
	default:
		t.Fatalf("query %s: %d series, want one: %s", query, len(r.Data.Result), body)
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("query %s: value %q: %v", query, s, err)
	}
	return v
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %s", u, resp.Status, err, b)
	}
	return string(b)
}

// freeAddr is a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/auth"
	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/segments"
)

// Prometheus metrics (--metrics-addr). The packages keep plain counters
// and snapshots (fs.Root.Stats, segments.Pool.Stats, cache.Blocks.Stats,
// auth.Keeper.Stats, ...); this file owns every metric name: a Collector
// reads the snapshots at scrape time. Only the Swift requests (the HTTP
// transport, built here) and the FUSE latencies are observed as they
// happen.

// MetricsConfig is the metrics endpoint's part of the configuration.
type MetricsConfig struct {
	Addr        string // host:port; "" is off
	AllowRemote bool   // allow an address that is not loopback
}

func metricsFlags(c *Config) []cli.Flag {
	m := &c.Metrics
	const cat = "Monitoring"
	return []cli.Flag{
		&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"IMAGEFS_METRICS_ADDR"}, Destination: &m.Addr, Category: cat,
			Usage: "serve Prometheus metrics on this loopback address (127.0.0.1:9474) at /metrics; empty: off"},
		&cli.BoolFlag{Name: "metrics-allow-remote", EnvVars: []string{"IMAGEFS_METRICS_ALLOW_REMOTE"}, Destination: &m.AllowRemote, Category: cat,
			Usage: "allow a --metrics-addr that is not loopback (the metrics name containers and files; nothing authenticates the scraper)"},
		&cli.StringFlag{Name: "run-dir", EnvVars: []string{"IMAGEFS_RUN_DIR"}, Value: defaultRunDir, Destination: &c.RunDir, Category: cat,
			Usage: "directory of the mounts' control sockets, which 'imagefs status' reads"},
	}
}

// validate reports what is wrong with the metrics address.
func (m *MetricsConfig) validate() []error {
	if m.Addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return []error{fmt.Errorf("--metrics-addr %q: want HOST:PORT, e.g. 127.0.0.1:9474: %v", m.Addr, err)}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return []error{fmt.Errorf("--metrics-addr %q: the port must be a number between 0 and 65535", m.Addr)}
	}
	if m.AllowRemote || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		what := "is not a loopback address"
		if host == "" {
			what = "has no host, which means every interface"
		}
		return []error{fmt.Errorf("--metrics-addr %q %s: use 127.0.0.1 or [::1] (a local Prometheus or agent scrapes it), "+
			"or add --metrics-allow-remote to expose the metrics to the network", m.Addr, what)}
	}
	return nil
}

// metrics are the daemon's metrics: the registry and what is observed
// as it happens.
type metrics struct {
	reg *prometheus.Registry

	swiftRequests *prometheus.CounterVec   // method, code
	swiftDuration *prometheus.HistogramVec // method
	swiftSent     prometheus.Counter
	swiftReceived prometheus.Counter
	fuseDuration  *prometheus.HistogramVec // op
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		swiftRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imagefs_swift_requests_total",
			Help: "HTTP requests to Swift, by method and status code (code \"error\": no answer)."}, []string{"method", "code"}),
		swiftDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imagefs_swift_request_duration_seconds",
			Help: "Time to the answer's headers of HTTP requests to Swift, by method.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)},
			[]string{"method"}),
		swiftSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "imagefs_swift_sent_bytes_total",
			Help: "Bytes of request bodies sent to Swift (uploads, manifests), retries included."}),
		swiftReceived: prometheus.NewCounter(prometheus.CounterOpts{Name: "imagefs_swift_received_bytes_total",
			Help: "Bytes of answer bodies received from Swift (reads, manifests, listings)."}),
		fuseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imagefs_fuse_operation_duration_seconds",
			Help: "Time imagefs took to answer FUSE requests, by operation.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)},
			[]string{"op"}),
	}
	m.reg.MustRegister(m.swiftRequests, m.swiftDuration, m.swiftSent, m.swiftReceived, m.fuseDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Add records a FUSE request (fuse.LatencyMap, for fs.Root.Mount).
func (m *metrics) Add(op string, dt time.Duration) {
	m.fuseDuration.WithLabelValues(op).Observe(dt.Seconds())
}

// transport counts the requests to Swift, below the keeper's transport.
func (m *metrics) transport(base http.RoundTripper) http.RoundTripper {
	return &countingTransport{base: base, m: m}
}

// countingTransport counts requests and bytes. It neither clones nor
// changes the request, and forwards CancelRequest and
// CloseIdleConnections.
type countingTransport struct {
	base http.RoundTripper
	m    *metrics
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	t.m.swiftDuration.WithLabelValues(req.Method).Observe(time.Since(start).Seconds())
	if req.ContentLength > 0 {
		t.m.swiftSent.Add(float64(req.ContentLength))
	}
	if err != nil {
		t.m.swiftRequests.WithLabelValues(req.Method, "error").Inc()
		return resp, err
	}
	t.m.swiftRequests.WithLabelValues(req.Method, strconv.Itoa(resp.StatusCode)).Inc()
	resp.Body = &countingBody{ReadCloser: resp.Body, c: t.m.swiftReceived}
	return resp, nil
}

func (t *countingTransport) CancelRequest(req *http.Request) {
	if c, ok := t.base.(interface{ CancelRequest(*http.Request) }); ok {
		c.CancelRequest(req)
	}
}

func (t *countingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

type countingBody struct {
	io.ReadCloser
	c prometheus.Counter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.c.Add(float64(n))
	}
	return n, err
}

// sources are what the collector reads at scrape time.
type sources struct {
	root    mountRoot
	pool    *segments.Pool
	staging *segments.Staging // nil without --staging-dir
	blocks  *cache.Blocks
	keeper  *auth.Keeper
	retries *segments.RetryCounts
	read    ReadConfig // the cache's limits
}

// collector turns the packages' snapshots into metrics at scrape time.
type collector struct{ s sources }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dFUSERead       = desc("imagefs_fuse_read_bytes_total", "Bytes read through the mount (FUSE READ).")
	dFUSEWritten    = desc("imagefs_fuse_written_bytes_total", "Bytes written through the mount (FUSE WRITE).")
	dCommits        = desc("imagefs_commits_total", "Commits at close(2) by result: ok (a new version is published) or error (close failed, nothing published).", "result")
	dAbandoned      = desc("imagefs_uploads_abandoned_total", "Uploads abandoned: the writer was killed by a signal, or the shutdown timeout passed.")
	dUploads        = desc("imagefs_uploads_in_flight", "Files being written (open for writing, not yet committed).")
	dUploadWritten  = desc("imagefs_upload_written_bytes", "Bytes written so far to the files being written, all together.")
	dUploadStored   = desc("imagefs_upload_uploaded_bytes", "Bytes of the files being written that Swift has stored, all together.")
	dUploadSegments = desc("imagefs_upload_segments", "Segments of the files being written, by state: in_flight (being PUT), queued (waiting for a worker).", "state")
	dRetries        = desc("imagefs_swift_retries_total", "Swift operations retried, by operation and cause (an HTTP status, timeout, connection, short_body, stalled).", "op", "cause")
	dAuthRenewals   = desc("imagefs_auth_renewals_total", "Tokens renewed by the token keeper.", "mode")
	dAuthFailures   = desc("imagefs_auth_renewal_failures_total", "Failed token renewal attempts.", "mode")
	dAuth401        = desc("imagefs_auth_rejections_total", "401 answers from Swift (each makes the keeper check or renew the token).", "mode")
	dAuthFallbacks  = desc("imagefs_auth_fallbacks_total", "Times the previous token was used because Swift refused the current one and Keystone could not renew it.", "mode")
	dAuthExpiry     = desc("imagefs_auth_token_expiry_seconds", "Seconds until the token in use expires (the service token in service-token mode).", "mode")
	dAuthDeadline   = desc("imagefs_auth_deadline_seconds", "Seconds until renewing stops helping: the application credential's expiry, or in service-token mode the end of the user token's allow-expired window. Absent when there is none.", "mode")
	dCacheHits      = desc("imagefs_cache_hits_total", "Blocks served from the cache, by tier (memory, disk).", "tier")
	dCacheMisses    = desc("imagefs_cache_misses_total", "Blocks that no tier had, fetched from Swift (prefetches included).")
	dCacheFetched   = desc("imagefs_cache_fetched_bytes_total", "Bytes fetched from Swift into the cache.")
	dCacheBytes     = desc("imagefs_cache_bytes", "Bytes the block cache holds, by tier.", "tier")
	dCacheLimit     = desc("imagefs_cache_limit_bytes", "Bytes the block cache may hold, by tier (--read-memory, --cache-size).", "tier")
	dCacheDropped   = desc("imagefs_cache_disk_write_dropped_total", "Blocks not written to the disk tier (queue full for 30 s, disk full, error).")
	dCacheWhole     = desc("imagefs_cache_whole_images", "Image versions whole in --cache-dir, each in one file (what passthrough serves).")
	dPassthroughs   = desc("imagefs_passthrough_opens_total", "Opens whose reads the kernel serves from the disk cache's whole-image file (FUSE passthrough).")
	dPtNewInodes    = desc("imagefs_passthrough_new_inodes_total", "Files given a new inode because their old one passes through a version that is no longer theirs (overwritten, or replaced by another host, while open with passthrough).")
	dCacheWaits     = desc("imagefs_cache_disk_write_waits_total", "Fetches that waited for room in the disk tier's write queue (a busy cache disk).")
	dCacheCorrupt   = desc("imagefs_cache_disk_corrupt_total", "Block files of the disk tier rejected when loaded.")
	dPrefetches     = desc("imagefs_prefetches_total", "Prefetch fetches started.")
	dPrefetchDrop   = desc("imagefs_prefetch_dropped_total", "Prefetches not started for lack of memory.")
	dWriteMem       = desc("imagefs_write_memory_bytes", "Memory of segment buffers in use.")
	dWriteMemBudget = desc("imagefs_write_memory_budget_bytes", "The most memory segment buffers may use ((upload-workers+1) x segment-size).")
	dWorkers        = desc("imagefs_upload_workers", "Upload workers, by state: busy (a segment PUT running) or total.", "state")
	dStaging        = desc("imagefs_staging_bytes", "Bytes of local disk staged files use (--staging-dir).")
	dStagingBudget  = desc("imagefs_staging_budget_bytes", "Bytes staged files may use (--staging-size); 0 without --staging-dir.")
)

var allDescs = []*prometheus.Desc{dFUSERead, dFUSEWritten, dCommits, dAbandoned, dUploads, dUploadWritten, dUploadStored,
	dUploadSegments, dRetries, dAuthRenewals, dAuthFailures, dAuth401, dAuthFallbacks, dAuthExpiry, dAuthDeadline,
	dCacheHits, dCacheMisses, dCacheFetched, dCacheBytes, dCacheLimit, dCacheDropped, dCacheWaits, dCacheWhole, dPassthroughs, dPtNewInodes, dCacheCorrupt, dPrefetches,
	dPrefetchDrop, dWriteMem, dWriteMemBudget, dWorkers, dStaging, dStagingBudget}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	s := c.s

	fst := s.root.Stats()
	counter(dFUSERead, fst.ReadBytes)
	counter(dFUSEWritten, fst.WrittenBytes)
	counter(dCommits, fst.Commits, "ok")
	counter(dCommits, fst.CommitFailures, "error")
	counter(dAbandoned, fst.Abandoned)
	ups := s.root.UploadList()
	var written, stored, inFlight, queued int64
	for _, u := range ups {
		written, stored, inFlight, queued = written+u.Written, stored+u.Uploaded, inFlight+u.InFlight, queued+u.Queued
	}
	gauge(dUploads, float64(len(ups)))
	gauge(dUploadWritten, float64(written))
	gauge(dUploadStored, float64(stored))
	gauge(dUploadSegments, float64(inFlight), "in_flight")
	gauge(dUploadSegments, float64(queued), "queued")

	for k, n := range s.retries.Snapshot() {
		counter(dRetries, n, k.Op, k.Cause)
	}

	ks := s.keeper.Stats()
	mode := string(ks.Mode)
	counter(dAuthRenewals, ks.Renewals, mode)
	counter(dAuthFailures, ks.Failures, mode)
	counter(dAuth401, ks.Rejections, mode)
	counter(dAuthFallbacks, ks.Fallbacks, mode)
	gauge(dAuthExpiry, ks.ExpiresIn.Seconds(), mode)
	if ks.DeadlineIn != 0 {
		gauge(dAuthDeadline, ks.DeadlineIn.Seconds(), mode)
	}

	cs := s.blocks.Stats()
	counter(dCacheHits, cs.MemHits, "memory")
	counter(dCacheHits, cs.DiskHits, "disk")
	counter(dCacheMisses, cs.FetchedBlocks)
	counter(dCacheFetched, cs.FetchedBytes)
	gauge(dCacheBytes, float64(cs.MemBytes), "memory")
	gauge(dCacheBytes, float64(cs.DiskBytes), "disk")
	gauge(dCacheLimit, float64(s.read.Memory.Bytes()), "memory")
	diskLimit := int64(0)
	if s.read.CacheDir != "" {
		diskLimit = s.read.CacheSize.Bytes()
	}
	gauge(dCacheLimit, float64(diskLimit), "disk")
	counter(dCacheDropped, cs.DiskWriteDropped)
	counter(dCacheWaits, cs.DiskWriteWaits)
	counter(dPassthroughs, fst.Passthroughs)
	counter(dPtNewInodes, fst.PassthroughNewInodes)
	gauge(dCacheWhole, float64(cs.DiskWholeImages))
	counter(dCacheCorrupt, cs.DiskCorrupt)
	counter(dPrefetches, cs.Prefetches)
	counter(dPrefetchDrop, cs.PrefetchDropped)

	ps := s.pool.Stats()
	gauge(dWriteMem, float64(ps.MemoryInUse))
	gauge(dWriteMemBudget, float64(ps.MemoryBudget))
	gauge(dWorkers, float64(ps.Uploads), "busy")
	gauge(dWorkers, float64(ps.Workers), "total")
	var used, budget int64
	if s.staging != nil {
		used, budget = s.staging.Used(), s.staging.Budget()
	}
	gauge(dStaging, float64(used))
	gauge(dStagingBudget, float64(budget))
}

// serveMetrics serves /metrics on l until ctx ends.
func serveMetrics(ctx context.Context, l net.Listener, reg *prometheus.Registry, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("the metrics endpoint stopped", "err", err)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/cache"
	"github.com/imagefs/imagefs/segments"
)

// Peer fill (cache/peer.go): the hosts of a fleet fill each other's block
// caches. Off unless --peers is set; the peer port is then --peer-listen,
// an explicit address of this host, and answers only requests signed with
// the key of --peer-key-file.

// PeerConfig is peer fill's part of the configuration.
type PeerConfig struct {
	Peers   string // host:port,... or name:port (a DNS name of every host)
	Listen  string // this host's host:port among them
	KeyFile string
	Timeout time.Duration
	Cache   Size

	key   []byte   // read by validate
	addrs []string // resolved peers, by resolve
}

func peerFlags(c *Config) []cli.Flag {
	p := &c.Peer
	const cat = "Peer fill (boot storms)"
	return []cli.Flag{
		&cli.StringFlag{Name: "peers", EnvVars: []string{"IMAGEFS_PEERS"}, Destination: &p.Peers, Category: cat,
			Usage: "the fleet's peer addresses, HOST:PORT,HOST:PORT,... (the same list on every host, this one included), or one NAME:PORT whose DNS name resolves to every host; empty: off"},
		&cli.StringFlag{Name: "peer-listen", EnvVars: []string{"IMAGEFS_PEER_LISTEN"}, Destination: &p.Listen, Category: cat,
			Usage: "this host's peer address, IP:PORT, as --peers lists it (never every interface)"},
		&cli.StringFlag{Name: "peer-key-file", EnvVars: []string{"IMAGEFS_PEER_KEY_FILE"}, Destination: &p.KeyFile, Category: cat,
			Usage: "file holding the key the fleet shares (one line, at least 16 characters; e.g. from 'head -c 32 /dev/urandom | base64')"},
		&cli.DurationFlag{Name: "peer-timeout", EnvVars: []string{"IMAGEFS_PEER_TIMEOUT"}, Value: 10 * time.Second, Destination: &p.Timeout, Category: cat,
			Usage: "how long one request to a peer may take (the owner of a cold block fetches it from Swift first) before the block comes from Swift (a failed peer is then skipped for 15 s)"},
		newSettingFlag(cat, "peer-cache", "IMAGEFS_PEER_CACHE", "128MiB", &p.Cache, "memory for the blocks this host fetched for the fleet"),
	}
}

// validate reports what is wrong with the peer settings, and reads the key.
func (p *PeerConfig) validate() []error {
	if p.Peers == "" {
		if p.Listen != "" || p.KeyFile != "" {
			return []error{errors.New("--peer-listen and --peer-key-file need --peers (the fleet's peer addresses)")}
		}
		return nil
	}
	var errs []error
	if p.Listen == "" {
		errs = append(errs, errors.New("--peers needs --peer-listen: this host's IP:PORT among the peers"))
	} else if host, port, err := net.SplitHostPort(p.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--peer-listen %q: want IP:PORT, e.g. 10.0.0.5:7474: %v", p.Listen, err))
	} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		errs = append(errs, fmt.Errorf("--peer-listen %q: name this host's own IP address on the fleet's network (not a name, not every interface)", p.Listen))
	} else if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		errs = append(errs, fmt.Errorf("--peer-listen %q: the port must be a number between 1 and 65535", p.Listen))
	}
	if p.KeyFile == "" {
		errs = append(errs, errors.New("--peers needs --peer-key-file: the fleet's shared key authenticates the peers"))
	} else if k, err := readSecret(p.KeyFile); err != nil {
		errs = append(errs, fmt.Errorf("--peer-key-file %s: %v", p.KeyFile, err))
	} else if len(k) < 16 {
		errs = append(errs, fmt.Errorf("--peer-key-file %s: the key is too short (%d characters); use at least 16, e.g. 'head -c 32 /dev/urandom | base64'", p.KeyFile, len(k)))
	} else {
		p.key = []byte(k)
	}
	if p.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--peer-timeout %s: must be positive", p.Timeout))
	}
	if p.Cache.Bytes() <= 0 {
		errs = append(errs, errors.New("--peer-cache: must be positive"))
	}
	return errs
}

// resolve turns --peers into IP:PORT addresses (names resolved), which
// must include --peer-listen.
func (p *PeerConfig) resolve(ctx context.Context) error {
	seen := map[string]bool{}
	for _, e := range strings.Split(p.Peers, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		host, port, err := net.SplitHostPort(e)
		if err != nil {
			return fmt.Errorf("--peers: %q is not HOST:PORT: %v", e, err)
		}
		ips := []string{host}
		if net.ParseIP(host) == nil {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ips, err = net.DefaultResolver.LookupHost(rctx, host)
			cancel()
			if err != nil {
				return fmt.Errorf("--peers: cannot resolve %s: %v", host, err)
			}
		}
		for _, ip := range ips {
			seen[net.JoinHostPort(ip, port)] = true
		}
	}
	if !seen[p.Listen] {
		return fmt.Errorf("--peer-listen %s is not among the peers (%s): list this host too, with the same address", p.Listen, p.Peers)
	}
	p.addrs = p.addrs[:0]
	for a := range seen {
		p.addrs = append(p.addrs, a)
	}
	sort.Strings(p.addrs)
	return nil
}

// peering is the daemon's peer fill: the engine and its port.
type peering struct {
	peers *cache.Peers
	l     net.Listener
}

// buildPeers sets peer fill up (nil without --peers) and opens its port,
// so that a port in use fails the mount at once.
func (d *daemon) buildPeers(ctx context.Context) error {
	cfg := &d.cfg.Peer
	if cfg.Peers == "" {
		return nil
	}
	if err := cfg.resolve(ctx); err != nil {
		return err
	}
	store, retry, log := d.store, d.retry, d.log
	seg := func(pc cache.Piece) segments.Segment {
		return segments.Segment{Container: pc.Container, Object: pc.Object, ETag: pc.ETag, Length: pc.Size, Size: pc.Size}
	}
	container, account := d.cfg.Container, d.cfg.Account
	peers, err := cache.NewPeers(cache.PeerOptions{
		Self: cfg.Listen, Peers: cfg.addrs, Key: cfg.key, Timeout: cfg.Timeout, CacheBytes: cfg.Cache.Bytes(), Log: log,
		Locate: func(src cache.Source, off int64) (cache.Piece, bool) {
			r, ok := src.(*segments.Reader)
			if !ok {
				return cache.Piece{}, false
			}
			m := r.Manifest()
			i, _, ok := m.Locate(off)
			if !ok {
				return cache.Piece{}, false
			}
			s := m.Segments[i]
			return cache.Piece{Container: s.Container, Object: s.Object, ETag: s.ETag, Size: s.Size,
				Offset: s.Offset, Length: s.Length, Start: m.Start(i)}, s.ETag != "" && s.Size > 0
		},
		Digests: func(ctx context.Context, pc cache.Piece) (int64, []uint32, error) {
			return segments.BlockDigests(ctx, store, seg(pc))
		},
		Fetch: func(ctx context.Context, pc cache.Piece, w io.Writer, off, n int64) (int64, error) {
			r := segments.NewReader(store, segments.NewManifest([]segments.Segment{seg(pc)}, ""), segments.ReaderOptions{Retry: retry, Log: log})
			return r.CopyRange(ctx, w, off, n)
		},
		Allow: func(c string) bool { return account || c == container || c == container+"_segments" },
	})
	if err != nil {
		return fmt.Errorf("peer fill: %v", err)
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--peer-listen %s: cannot listen there: %v", cfg.Listen, err)
	}
	d.peering = &peering{peers: peers, l: l}
	d.log.Info("peer fill on", "listen", cfg.Listen, "peers", cfg.addrs)
	return nil
}

// servePeers serves the peer port for the mount's life, and its metrics.
func (d *daemon) servePeers(life context.Context, wg *sync.WaitGroup) {
	pg := d.peering
	if pg == nil {
		return
	}
	if d.metrics != nil {
		d.metrics.reg.MustRegister(&peerCollector{p: pg.peers})
	}
	srv := &http.Server{Handler: pg.peers.Handler(), ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() {
		<-life.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	wg.Go(func() {
		if err := srv.Serve(pg.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Warn("the peer port stopped", "err", err)
		}
	})
}

var (
	dPeerBytes    = desc("imagefs_peer_fill_bytes_total", "Bytes of blocks filled through peer fill, by source: swift (fetched by this host, for itself or the fleet), peers (from the block's owner, verified), direct (read from Swift without peers: no block digests, or the peers failed).", "source")
	dPeerServed   = desc("imagefs_peer_served_bytes_total", "Bytes of blocks this host sent to peers.")
	dPeerErrors   = desc("imagefs_peer_errors_total", "Requests to peers that failed (refused, timed out, bad answer); the block then came from Swift.")
	dPeerRejected = desc("imagefs_peer_rejected_total", "Answers of peers rejected because their bytes did not match the block digest recorded in Swift, or their signature was wrong.")
	dPeerFallback = desc("imagefs_peer_fallbacks_total", "Blocks another host owns that this host fetched from Swift itself (the owner failed or was skipped).")
	dPeerRefused  = desc("imagefs_peer_refused_total", "Requests to this host's peer port without a valid signature of the fleet's key.")
	dPeerCache    = desc("imagefs_peer_cache_bytes", "Bytes of blocks held for the fleet (--peer-cache).")
)

// peerCollector turns peer fill's counters into metrics at scrape time.
type peerCollector struct{ p *cache.Peers }

func (c *peerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dPeerBytes, dPeerServed, dPeerErrors, dPeerRejected, dPeerFallback, dPeerRefused, dPeerCache} {
		ch <- d
	}
}

func (c *peerCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	s := c.p.Stats()
	counter(dPeerBytes, s.FromSwift, "swift")
	counter(dPeerBytes, s.FromPeers, "peers")
	counter(dPeerBytes, s.Bypassed, "direct")
	counter(dPeerServed, s.ServedToPeers)
	counter(dPeerErrors, s.PeerErrors)
	counter(dPeerRejected, s.Rejected)
	counter(dPeerFallback, s.Fallbacks)
	counter(dPeerRefused, s.Refused)
	ch <- prometheus.MustNewConstMetric(dPeerCache, prometheus.GaugeValue, float64(s.CacheBytes))
}

package cache

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/groupcache"
	pb "github.com/golang/groupcache/groupcachepb"
	"github.com/golang/groupcache/singleflight"
	"github.com/golang/protobuf/proto"
)

// Peer fill: the hosts of a fleet fill each other's block caches, so that
// in a boot storm each block of an image comes from Swift once for the
// whole fleet, not once per host.
//
// The engine is github.com/golang/groupcache (built for this: each key
// has one owner among the peers by consistent hashing, the owner loads it
// once, single-flight, and keeps it in a bounded LRU; the others ask the
// owner over HTTP). A [Peers] wraps every [Source] a [Blocks] opens (see
// Options.Peers): a fetch asks groupcache for each unit of the range, and
// groupcache asks the unit's owner, or, on this host's own units, loads
// it from Swift.
//
// A unit is a run of digest blocks of one segment object (PeerOptions.
// UnitSize, 2 MiB): the blocks over which the writer recorded a CRC-32C
// each in the segment's metadata (segments.BlockDigests). Its key names
// the segment object, its ETag (the version: an overwritten image has new
// segments with new ETags, so it is never served from a peer's old
// blocks), its size, the unit's length and its index: everything the
// owner needs to fetch it from Swift (a ranged GET pinned to the ETag),
// and nothing else.
//
// Verification. A host uses a unit from a peer only when its CRC-32C is
// the one Swift gives for it: the requester reads the segment's digests
// with a HEAD of its own (once per segment, cached) before it asks, and
// checks the bytes in the HTTP transport, so that groupcache itself falls
// back to loading the unit from Swift when a peer's bytes are wrong; they
// are checked once more before they reach the cache. Units without
// digests (objects other tools wrote) never go through peers. CRC-32C
// catches a faulty peer (a flipped bit, a wrong block, a stale cache); it
// is not a defence against a fleet member that forges data on purpose:
// fleet members hold the fleet's Swift credentials and could rewrite the
// images in Swift anyway. Against everybody else the peer port is shut:
// every request and every answer carries an HMAC-SHA256 of a key the
// fleet shares (PeerOptions.Key), over the request's path and time and
// over the answer's bytes; the answers of a peer that cannot sign them
// are rejected like bad bytes.
//
// Bounded cost. Each request to a peer has PeerOptions.Timeout; a peer
// that fails (refuses, answers wrong, or times out maxSlow times in a
// row: an owner busy with Swift is slow now and then) is skipped for
// PeerOptions.Down, so a dead peer costs a few timeouts per requester at
// most, then nothing, and its units come from Swift.

// Piece is where a range of a source's bytes lives in Swift: bytes
// [Offset, Offset+Length) of segment object Container/Object (Size bytes
// in all, version ETag) are the source's bytes from Start.
type Piece struct {
	Container, Object, ETag string
	Size                    int64
	Offset, Length          int64
	Start                   int64
}

// PeerOptions configure peer fill.
type PeerOptions struct {
	// Self is this host's peer address (host:port, as the others list it);
	// Peers lists every host's, Self included, the same on every host.
	Self  string
	Peers []string
	// Key is the secret the fleet shares (at least 16 bytes).
	Key []byte
	// Timeout bounds one request to a peer (default 10 s: the owner of a
	// cold block fetches it from Swift first, on a busy cluster); a peer that fails is
	// skipped for Down (default 15 s).
	Timeout, Down time.Duration
	// UnitSize is the bytes a peer is asked for at once (default 2 MiB,
	// rounded down to whole digest blocks, at least one): larger units
	// cost fewer requests to peers and to Swift, smaller ones less for a
	// random read.
	UnitSize int64
	// CacheBytes bounds the memory of the units this host keeps for the
	// others (default 128 MiB).
	CacheBytes int64
	// Locate says where byte off of src lives (false: nowhere peers can
	// help, read src itself).
	Locate func(src Source, off int64) (Piece, bool)
	// Digests returns the block digests of p's segment object, from Swift
	// (block 0: it has none).
	Digests func(ctx context.Context, p Piece) (block int64, crcs []uint32, err error)
	// Fetch writes bytes [off, off+n) of p's segment object to w, from
	// Swift, verified against its digests.
	Fetch func(ctx context.Context, p Piece, w io.Writer, off, n int64) (int64, error)
	// Allow says whether peers may ask for units of segments in container
	// (the mounted container and its segment container): a peer never
	// makes this host read anything else.
	Allow func(container string) bool
	Log   *slog.Logger
}

// PeerStats are counters of peer fill.
type PeerStats struct {
	FromPeers     int64 // bytes of units that came from peers, verified
	FromSwift     int64 // bytes of units this host loaded from Swift (its own, and fallbacks)
	ServedToPeers int64 // bytes of units sent to peers
	PeerErrors    int64 // requests to peers that failed (refused, timed out, bad answer)
	Rejected      int64 // answers whose bytes or signature were wrong (counted in PeerErrors too)
	Fallbacks     int64 // units another host owns that this host loaded from Swift
	Bypassed      int64 // bytes read straight from the source (no digests, or no peer could help)
	Refused       int64 // requests to the peer port without a valid signature
	CacheBytes    int64 // bytes of units kept for peers (current)
	DigestLookups int64 // HEADs for block digests
	Skipped       int64 // requests not sent because the owner was skipped (failed lately)
}

// Peers is the peer-fill engine. Only one can be made per process
// (groupcache keeps its peers and groups in globals). Safe for concurrent
// use.
type Peers struct {
	o     PeerOptions
	pool  *groupcache.HTTPPool
	group *groupcache.Group
	base  http.RoundTripper

	dmu     sync.Mutex // guards digests
	digests map[string]digestSet
	dsf     singleflight.Group

	downMu sync.Mutex // guards down and slow
	down   map[string]time.Time
	slow   map[string]int // requests timed out in a row

	fromPeers, fromSwift, served, peerErrs, rejected, fallbacks, bypassed, refused, lookups, skipped atomic.Int64
}

// digestSet is the block digests of one segment object version.
type digestSet struct {
	block int64
	crcs  []uint32
}

// maxDigestSets bounds the digests kept (each at most ~2 KiB).
const maxDigestSets = 4096

const (
	peerGroup    = "imagefs-blocks-1"
	peerBasePath = "/_imagefs_peer/"
	hdrAuth      = "X-Imagefs-Peer-Auth" // "<unix seconds>:<hex HMAC of request>"
	hdrSig       = "X-Imagefs-Peer-Sig"  // hex HMAC of the request's signature and the answer's body
	authWindow   = 5 * time.Minute       // the most a request's time may be off
	maxAnswer    = 64 << 20              // bytes of one answer (a digest block is at most a few MiB)
)

var peersMade atomic.Bool

// ErrPeerKey: the peer key is too short.
var ErrPeerKey = errors.New("the peer key must be at least 16 bytes")

// NewPeers sets peer fill up. It serves nothing by itself: serve
// Handler on the address Self names.
func NewPeers(o PeerOptions) (*Peers, error) {
	if len(o.Key) < 16 {
		return nil, ErrPeerKey
	}
	found := false
	for _, p := range o.Peers {
		found = found || p == o.Self
	}
	if !found {
		return nil, fmt.Errorf("this host's peer address %s is not among the peers %v", o.Self, o.Peers)
	}
	if o.Locate == nil || o.Digests == nil || o.Fetch == nil || o.Allow == nil {
		return nil, errors.New("peer fill needs Locate, Digests, Fetch and Allow")
	}
	if !peersMade.CompareAndSwap(false, true) {
		return nil, errors.New("peer fill can be set up once per process")
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Down <= 0 {
		o.Down = 15 * time.Second
	}
	if o.UnitSize <= 0 {
		o.UnitSize = 2 << 20
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = 128 << 20
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	p := &Peers{o: o, digests: map[string]digestSet{}, down: map[string]time.Time{}, slow: map[string]int{},
		base: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: o.Timeout}}
	p.pool = groupcache.NewHTTPPoolOpts(peerURL(o.Self), &groupcache.HTTPPoolOptions{BasePath: peerBasePath})
	p.pool.Transport = func(context.Context) http.RoundTripper { return (*peerTransport)(p) }
	urls := make([]string, len(o.Peers))
	for i, a := range o.Peers {
		urls[i] = peerURL(a)
	}
	p.pool.Set(urls...)
	p.group = groupcache.NewGroup(peerGroup, o.CacheBytes, groupcache.GetterFunc(p.load))
	return p, nil
}

func peerURL(addr string) string { return "http://" + addr }

// Close drops the connections to the peers. The engine itself lives as
// long as the process (groupcache's groups are global).
func (p *Peers) Close() { p.base.(*http.Transport).CloseIdleConnections() }

// Stats returns a snapshot of the counters.
func (p *Peers) Stats() PeerStats {
	cs := p.group.CacheStats(groupcache.MainCache)
	hs := p.group.CacheStats(groupcache.HotCache)
	return PeerStats{FromPeers: p.fromPeers.Load(), FromSwift: p.fromSwift.Load(), ServedToPeers: p.served.Load(),
		PeerErrors: p.peerErrs.Load(), Rejected: p.rejected.Load(), Fallbacks: p.fallbacks.Load(),
		Bypassed: p.bypassed.Load(), Refused: p.refused.Load(), CacheBytes: cs.Bytes + hs.Bytes,
		DigestLookups: p.lookups.Load(), Skipped: p.skipped.Load()}
}

// LogValue logs the counters as a group.
func (s PeerStats) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("from_peers", s.FromPeers), slog.Int64("from_swift", s.FromSwift),
		slog.Int64("served_to_peers", s.ServedToPeers), slog.Int64("peer_errors", s.PeerErrors),
		slog.Int64("rejected", s.Rejected), slog.Int64("fallbacks", s.Fallbacks), slog.Int64("bypassed", s.Bypassed),
		slog.Int64("refused", s.Refused))
}

// unit is a run of digest blocks of one segment object version (block
// bytes from idx*block): a groupcache key.
type unit struct {
	p     Piece // Container, Object, ETag, Size
	block int64
	idx   int64
}

func (u unit) bounds() (lo, hi int64) {
	lo = u.idx * u.block
	return lo, min(lo+u.block, u.p.Size)
}

// key encodes u in URL-safe characters only (groupcache puts keys in
// URL paths, and its server does not decode every escape back).
func (u unit) key() string {
	enc := base64.RawURLEncoding.EncodeToString
	return strings.Join([]string{"1", enc([]byte(u.p.ETag)), strconv.FormatInt(u.p.Size, 10), strconv.FormatInt(u.block, 10),
		strconv.FormatInt(u.idx, 10), enc([]byte(u.p.Container)), enc([]byte(u.p.Object))}, ".")
}

func parseUnit(key string) (unit, error) {
	f := strings.Split(key, ".")
	bad := fmt.Errorf("malformed peer key %.80q", key)
	if len(f) != 7 || f[0] != "1" {
		return unit{}, bad
	}
	dec := base64.RawURLEncoding.DecodeString
	etag, e1 := dec(f[1])
	size, e2 := strconv.ParseInt(f[2], 10, 64)
	block, e3 := strconv.ParseInt(f[3], 10, 64)
	idx, e4 := strconv.ParseInt(f[4], 10, 64)
	c, e5 := dec(f[5])
	o, e6 := dec(f[6])
	if err := errors.Join(e1, e2, e3, e4, e5, e6); err != nil || size <= 0 || block <= 0 || block > maxAnswer || idx < 0 || idx*block >= size {
		return unit{}, bad
	}
	return unit{p: Piece{Container: string(c), Object: string(o), ETag: string(etag), Size: size}, block: block, idx: idx}, nil
}

// load is groupcache's getter: the unit from Swift, for this host's own
// units and, when the owner could not give it, for the others'.
func (p *Peers) load(ctx context.Context, key string, dest groupcache.Sink) error {
	u, err := parseUnit(key)
	if err != nil {
		return err
	}
	if !p.o.Allow(u.p.Container) {
		return fmt.Errorf("peer key names container %q, which this host does not serve", u.p.Container)
	}
	if _, remote := p.pool.PickPeer(key); remote {
		p.fallbacks.Add(1)
	}
	lo, hi := u.bounds()
	var buf bytes.Buffer
	buf.Grow(int(hi - lo))
	// The load serves every caller that waits for the unit (groupcache's
	// single flight), here and on the peers: the one that started it must
	// not cancel it for the others. The Fetch's retry budget bounds it.
	n, err := p.o.Fetch(context.WithoutCancel(ctx), u.p, &buf, lo, hi-lo)
	if err != nil {
		return err
	}
	if n != hi-lo {
		return fmt.Errorf("unit %d of %s/%s: %w", u.idx, u.p.Container, u.p.Object, io.ErrUnexpectedEOF)
	}
	p.fromSwift.Add(n)
	return dest.SetBytes(buf.Bytes())
}

// wantKey carries the CRC-32C a unit must have to the transport.
type wantKey struct{}

// digestsOf returns the digests of piece's segment object, looked up
// once (a HEAD) and kept.
func (p *Peers) digestsOf(ctx context.Context, pc Piece) (digestSet, error) {
	k := pc.Container + "/" + pc.Object + "\x00" + pc.ETag
	p.dmu.Lock()
	d, ok := p.digests[k]
	p.dmu.Unlock()
	if ok {
		return d, nil
	}
	v, err := p.dsf.Do(k, func() (any, error) {
		p.lookups.Add(1)
		block, crcs, err := p.o.Digests(ctx, pc)
		if err != nil {
			return digestSet{}, err
		}
		d := digestSet{block: block, crcs: crcs}
		p.dmu.Lock()
		if len(p.digests) >= maxDigestSets {
			clear(p.digests)
		}
		p.digests[k] = d
		p.dmu.Unlock()
		return d, nil
	})
	if err != nil {
		return digestSet{}, err
	}
	return v.(digestSet), nil
}

// wrap returns src read through the peers.
func (p *Peers) wrap(src Source) Source { return &peerSource{p: p, src: src} }

// peerSource is a Source whose units come from their owners.
type peerSource struct {
	p   *Peers
	src Source
}

func (s *peerSource) Boundary(off int64) int64 { return s.src.Boundary(off) }

// peerWindow is how many units one CopyRange asks for at once: a round
// trip to a peer (and the owner's GET) is mostly waiting.
const peerWindow = 4

// step is one part of a CopyRange: bytes [pos, pos+n) from a unit, or,
// without one, straight from the source.
type step struct {
	pos, n int64
	u      unit
	d      digestSet
	direct bool
	data   groupcache.ByteView
	err    error
	done   chan struct{}
	wrote  int64 // bytes written to the CopyRange's writer
}

// CopyRange implements Source: unit by unit, through groupcache, up to
// peerWindow at once, written in order; a piece without digests, and a
// unit that cannot be had verified, from src.
func (s *peerSource) CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	pos, end := off, off+n
	var queue []*step
	var total int64
	for pos < end || len(queue) > 0 {
		for pos < end && len(queue) < peerWindow {
			st := s.plan(ctx, pos, end)
			queue = append(queue, st)
			pos += st.n
			if st.direct {
				continue
			}
			wg.Go(func() {
				defer close(st.done)
				st.data, st.err = s.p.get(ctx, st.u, st.d)
			})
		}
		st := queue[0] // the steps are written in order
		queue = queue[1:]
		err := s.write(ctx, w, st)
		total += st.wrote
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// plan is the next step of a CopyRange at pos.
func (s *peerSource) plan(ctx context.Context, pos, end int64) *step {
	p := s.p
	pc, ok := p.o.Locate(s.src, pos)
	var d digestSet
	if ok {
		var err error
		if d, err = p.digestsOf(ctx, pc); err != nil && ctx.Err() == nil {
			p.o.Log.Debug("no block digests for peer fill; reading from Swift", "object", pc.Container+"/"+pc.Object, "err", err)
		}
	}
	if !ok || d.block == 0 {
		// Nothing to check peers' bytes against: Swift, up to the end of
		// this piece.
		stop := end
		if ok {
			stop = min(end, pc.Start+pc.Length)
		}
		return &step{pos: pos, n: stop - pos, direct: true}
	}
	so := pc.Offset + (pos - pc.Start) // offset in the segment object
	span := d.block * max(1, p.o.UnitSize/d.block)
	u := unit{p: pc, block: span, idx: so / span}
	_, hi := u.bounds()
	return &step{pos: pos, n: min(hi, pc.Offset+pc.Length, so+(end-pos)) - so, u: u, d: d, done: make(chan struct{})}
}

// write writes a step's bytes to w, from the source when the unit could
// not be had.
func (s *peerSource) write(ctx context.Context, w io.Writer, st *step) error {
	p := s.p
	if !st.direct {
		select {
		case <-st.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if st.err == nil {
			lo, _ := st.u.bounds()
			so := st.u.p.Offset + (st.pos - st.u.p.Start)
			c, err := st.data.Slice(int(so-lo), int(so-lo+st.n)).WriteTo(w)
			st.data, st.wrote = groupcache.ByteView{}, c
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.o.Log.Debug("peer fill failed; reading from Swift", "object", st.u.p.Container+"/"+st.u.p.Object, "off", st.pos, "err", st.err)
	}
	c, err := s.src.CopyRange(ctx, w, st.pos, st.n)
	p.bypassed.Add(c)
	st.wrote = c
	return err
}

// get returns unit u from groupcache, checked against its digests.
func (p *Peers) get(ctx context.Context, u unit, d digestSet) (groupcache.ByteView, error) {
	lo, hi := u.bounds()
	first, last := lo/d.block, (hi+d.block-1)/d.block
	if lo%d.block != 0 || last > int64(len(d.crcs)) {
		return groupcache.ByteView{}, errors.New("unit does not fit the digests")
	}
	w := want{block: d.block, crcs: d.crcs[first:last], n: hi - lo}
	var bv groupcache.ByteView
	if err := p.group.Get(context.WithValue(ctx, wantKey{}, w), u.key(), groupcache.ByteViewSink(&bv)); err != nil {
		return groupcache.ByteView{}, err
	}
	if !w.okView(bv) {
		p.rejected.Add(1)
		return groupcache.ByteView{}, errors.New("unit does not match its block digests")
	}
	return bv, nil
}

// want is what a unit's bytes must be: n bytes whose blocks of block
// bytes have the CRC-32Cs crcs.
type want struct {
	block int64
	crcs  []uint32
	n     int64
}

func (w want) ok(b []byte) bool {
	if int64(len(b)) != w.n {
		return false
	}
	for i, c := range w.crcs {
		lo := int64(i) * w.block
		if lo >= w.n || crc32.Checksum(b[lo:min(lo+w.block, w.n)], castagnoli) != c {
			return false
		}
	}
	return true
}

// okView checks a ByteView without copying it.
func (w want) okView(v groupcache.ByteView) bool {
	if int64(v.Len()) != w.n {
		return false
	}
	h := crc32.New(castagnoli)
	for i, c := range w.crcs {
		lo := int64(i) * w.block
		h.Reset()
		if lo >= w.n {
			return false
		}
		_, _ = v.Slice(int(lo), int(min(lo+w.block, w.n))).WriteTo(h)
		if h.Sum32() != c {
			return false
		}
	}
	return true
}

// sign is the HMAC of parts under the fleet's key.
func (p *Peers) sign(parts ...string) string {
	m := hmac.New(sha256.New, p.o.Key)
	for _, s := range parts {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// signAnswer is the HMAC of an answer: sign("ans", reqSig, body),
// without copying the body.
func (p *Peers) signAnswer(reqSig string, body []byte) string {
	m := hmac.New(sha256.New, p.o.Key)
	m.Write([]byte("ans\x00" + reqSig + "\x00"))
	m.Write(body)
	m.Write([]byte{0})
	return hex.EncodeToString(m.Sum(nil))
}

// isDown reports whether host failed less than Down ago.
func (p *Peers) isDown(host string) bool {
	p.downMu.Lock()
	defer p.downMu.Unlock()
	t, ok := p.down[host]
	if ok && time.Since(t) > p.o.Down {
		delete(p.down, host)
		return false
	}
	return ok
}

// maxSlow is how many requests in a row may time out before the peer is
// skipped: an owner that is busy fetching from Swift is slow now and
// then, a hung one every time.
const maxSlow = 3

// failed counts a failed request to host and skips the host for Down
// when it is gone (the connection failed), lies, or timed out maxSlow
// times in a row.
func (p *Peers) failed(host string, err error) {
	p.peerErrs.Add(1)
	var ne net.Error
	slow := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
	p.downMu.Lock()
	if slow {
		p.slow[host]++
		if p.slow[host] < maxSlow {
			p.downMu.Unlock()
			p.o.Log.Debug("peer slow; this block comes from Swift", "peer", host, "err", err)
			return
		}
	}
	delete(p.slow, host)
	_, was := p.down[host]
	p.down[host] = time.Now()
	p.downMu.Unlock()
	if !was {
		p.o.Log.Warn("peer failed; its blocks come from Swift for a while", "peer", host, "for", p.o.Down, "err", err)
	}
}

// answered notes a good answer of host.
func (p *Peers) answered(host string) {
	p.downMu.Lock()
	delete(p.slow, host)
	p.downMu.Unlock()
}

// peerTransport is groupcache's client transport: it signs the request,
// bounds it in time, and accepts an answer only when it is signed and
// its bytes match the digest the requester expects.
type peerTransport Peers

var errPeerDown = errors.New("peer marked down after a failure")

func (t *peerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	p := (*Peers)(t)
	host := req.URL.Host
	if p.isDown(host) {
		p.skipped.Add(1)
		return nil, errPeerDown
	}
	w, ok := req.Context().Value(wantKey{}).(want)
	if !ok {
		return nil, errors.New("peer request without an expected digest")
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sig := p.sign("req", ts, req.URL.Path)
	req.Header.Set(hdrAuth, ts+":"+sig)
	ctx, cancel := context.WithTimeout(req.Context(), p.o.Timeout)
	defer cancel()
	res, err := p.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		if req.Context().Err() == nil {
			p.failed(host, err)
		}
		return nil, err
	}
	defer res.Body.Close()
	body := make([]byte, 0, min(max(res.ContentLength, 0)+1, maxAnswer))
	body, err = readAllInto(body, io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		if req.Context().Err() == nil {
			p.failed(host, err)
		}
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		// The peer is there, but could not load the unit (from Swift):
		// this host tries itself, and asks it again next time.
		p.peerErrs.Add(1)
		return nil, fmt.Errorf("peer answered %s", res.Status)
	}
	var gr pb.GetResponse
	switch {
	case !hmac.Equal([]byte(res.Header.Get(hdrSig)), []byte(p.signAnswer(sig, body))):
		err = errors.New("peer's answer is not signed with the fleet's key")
	case proto.Unmarshal(body, &gr) != nil:
		err = errors.New("peer's answer is not a groupcache answer")
	case !w.ok(gr.GetValue()):
		err = errors.New("peer's bytes do not match the block digest recorded in Swift")
	}
	if err != nil {
		p.rejected.Add(1)
		p.failed(host, err)
		return nil, err
	}
	p.answered(host)
	p.fromPeers.Add(int64(len(gr.GetValue())))
	return &http.Response{StatusCode: http.StatusOK, Status: res.Status, Header: res.Header, Body: io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: req}, nil
}

// readAllInto is io.ReadAll into b's room.
func readAllInto(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// Handler serves the peer port: groupcache's handler, for signed
// requests only, with signed answers.
func (p *Peers) Handler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, peerBasePath+peerGroup+"/") || !p.authentic(r) {
			p.refused.Add(1)
			http.Error(rw, "forbidden: not a request of this fleet (see --peer-key-file)", http.StatusForbidden)
			return
		}
		rec := &recorder{h: http.Header{}, code: http.StatusOK}
		p.pool.ServeHTTP(rec, r)
		for k, v := range rec.h {
			rw.Header()[k] = v
		}
		if rec.code == http.StatusOK {
			sig := r.Header.Get(hdrAuth)
			sig = sig[strings.IndexByte(sig, ':')+1:]
			rw.Header().Set(hdrSig, p.signAnswer(sig, rec.body.Bytes()))
			p.served.Add(int64(rec.body.Len()))
		}
		rw.WriteHeader(rec.code)
		_, _ = rw.Write(rec.body.Bytes())
	})
}

// authentic checks a request's signature and time.
func (p *Peers) authentic(r *http.Request) bool {
	ts, sig, ok := strings.Cut(r.Header.Get(hdrAuth), ":")
	if !ok {
		return false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	if d := time.Since(time.Unix(sec, 0)); d > authWindow || d < -authWindow {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(p.sign("req", ts, r.URL.Path)))
}

// recorder holds groupcache's answer until it is signed.
type recorder struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

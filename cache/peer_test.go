package cache

import (
	"bytes"
	"context"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/protobuf/proto"

	pb "github.com/golang/groupcache/groupcachepb"
)

// TestPeers runs one engine (groupcache allows one per process) against a
// second host played by the test: honest, lying, unsigned, dead. Each
// case reads the whole image through a Blocks cache and checks every
// byte; the real fleet (four daemons, real mounts, real Swift) is in
// test/integration/peer_test.go.
func TestPeers(t *testing.T) {
	const size, block = 8 * mib, 256 * kib
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	crcs := make([]uint32, size/block)
	for i := range crcs {
		crcs[i] = crc32.Checksum(data[i*block:(i+1)*block], castagnoli)
	}
	key := []byte("0123456789abcdef-fleet")
	lself, lother := listen(t), listen(t)
	self, other := lself.Addr().String(), lother.Addr().String()

	var swiftBytes atomic.Int64
	src := &memSource{data: data}
	p, err := NewPeers(PeerOptions{Self: self, Peers: []string{self, other}, Key: key, Timeout: 300 * time.Millisecond, Down: time.Millisecond, UnitSize: 512 * kib,
		Locate: func(s Source, off int64) (Piece, bool) {
			return Piece{Container: "c_segments", Object: "img/seg", ETag: "e1", Size: size, Length: size}, s == Source(src)
		},
		Digests: func(context.Context, Piece) (int64, []uint32, error) { return block, crcs, nil },
		Fetch: func(_ context.Context, _ Piece, w io.Writer, off, n int64) (int64, error) {
			swiftBytes.Add(n)
			c, err := w.Write(data[off : off+n])
			return int64(c), err
		},
		Allow: func(c string) bool { return c == "c_segments" },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	srvSelf := &http.Server{Handler: p.Handler()}
	go srvSelf.Serve(lself)
	defer srvSelf.Close()

	// The other host: signs its answers with the key (or not), and
	// answers with the right bytes (or flipped ones).
	var mode atomic.Value
	var served atomic.Int64
	mode.Store("honest")
	srvOther := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := mode.Load().(string)
		if m == "slow" {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
				return
			}
		}
		k := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		u, err := parseUnit(k)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		lo, hi := u.bounds()
		v := bytes.Clone(data[lo:hi])
		if m == "liar" {
			v[len(v)/2] ^= 0x40
		}
		body, _ := proto.Marshal(&pb.GetResponse{Value: v})
		sig := r.Header.Get(hdrAuth)
		sig = sig[strings.IndexByte(sig, ':')+1:]
		if m != "unsigned" {
			w.Header().Set(hdrSig, p.sign("ans", sig, string(body)))
		}
		served.Add(int64(hi - lo))
		w.Write(body)
	})}
	go srvOther.Serve(lother)
	defer srvOther.Close()

	readAll := func(t *testing.T, name string) {
		t.Helper()
		b, err := New(Options{Memory: 64 * mib, Peers: p})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		f := b.Open("version-"+name, size, src)
		got := make([]byte, size)
		start := time.Now()
		if _, err := f.ReadAt(context.Background(), got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("bytes read through peers differ from the image")
		}
		if d := time.Since(start); d > 30*time.Second { // a slow peer costs timeouts of 300 ms, then is skipped: never the 2 s it waits per answer for each unit
			t.Errorf("read took %v", d)
		}
	}
	// The group's cache keeps what this host loaded; each case reads
	// another version of the segment so that nothing is cached yet.
	etag := 0
	fresh := func() {
		etag++
		e := "e" + string(rune('a'+etag))
		p.o.Locate = func(s Source, off int64) (Piece, bool) {
			return Piece{Container: "c_segments", Object: "img/seg", ETag: e, Size: size, Length: size}, true
		}
	}

	t.Run("honest", func(t *testing.T) {
		fresh()
		before, sw := p.Stats(), swiftBytes.Load()
		served.Store(0)
		readAll(t, "honest")
		s := p.Stats()
		// An answer that came after the 300 ms timeout (a busy machine)
		// was served but not used: that unit came from Swift.
		if s.FromPeers-before.FromPeers == 0 || s.FromPeers-before.FromPeers > served.Load() {
			t.Errorf("from peers %d, the other host served %d", s.FromPeers-before.FromPeers, served.Load())
		}
		if got := swiftBytes.Load() - sw + s.FromPeers - before.FromPeers; got != size {
			t.Errorf("swift %d + peers %d bytes for an image of %d", swiftBytes.Load()-sw, s.FromPeers-before.FromPeers, size)
		}
	})
	for _, m := range []string{"liar", "unsigned", "slow"} {
		t.Run(m, func(t *testing.T) {
			fresh()
			mode.Store(m)
			if m == "slow" {
				// A slow peer costs one timeout, then is skipped.
				p.o.Down = time.Minute
				p.downMu.Lock()
				clear(p.down)
				p.downMu.Unlock()
			}
			before, sw := p.Stats(), swiftBytes.Load()
			readAll(t, m)
			s := p.Stats()
			if s.FromPeers != before.FromPeers {
				t.Errorf("%d bytes from a %s peer were used", s.FromPeers-before.FromPeers, m)
			}
			if s.PeerErrors == before.PeerErrors || s.Fallbacks == before.Fallbacks {
				t.Errorf("peer errors %d, fallbacks %d: want some", s.PeerErrors-before.PeerErrors, s.Fallbacks-before.Fallbacks)
			}
			if m != "slow" && s.Rejected == before.Rejected {
				t.Error("no answer rejected")
			}
			if got := swiftBytes.Load() - sw; got != size {
				t.Errorf("%d bytes from Swift, want the whole image (%d)", got, size)
			}
		})
	}
	t.Run("port", func(t *testing.T) {
		u := unit{p: Piece{Container: "c_segments", Object: "img/seg", ETag: "e1", Size: size}, block: block, idx: 0}
		path := peerBasePath + peerGroup + "/" + u.key()
		get := func(hdr string, p string) int {
			req, _ := http.NewRequest("GET", "http://"+self+p, nil)
			if hdr != "" {
				req.Header.Set(hdrAuth, hdr)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return res.StatusCode
		}
		now := time.Now().Unix()
		ts := func(t int64) string { return strconv.FormatInt(t, 10) }
		for _, c := range []struct {
			name, hdr string
			want      int
		}{
			{"no signature", "", 403},
			{"wrong key", ts(now) + ":" + (&Peers{o: PeerOptions{Key: []byte("another-key-of-16b")}}).sign("req", ts(now), path), 403},
			{"old", ts(now-3600) + ":" + p.sign("req", ts(now-3600), path), 403},
			{"signed", ts(now) + ":" + p.sign("req", ts(now), path), 200},
		} {
			if got := get(c.hdr, path); got != c.want {
				t.Errorf("%s: HTTP %d, want %d", c.name, got, c.want)
			}
		}
		bad := unit{p: Piece{Container: "elsewhere", Object: "x", ETag: "e", Size: size}, block: block}
		bp := peerBasePath + peerGroup + "/" + bad.key()
		if got := get(ts(now)+":"+p.sign("req", ts(now), bp), bp); got == 200 {
			t.Error("a signed request for a container the host does not serve was answered")
		}
	})
	http.DefaultClient.CloseIdleConnections()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

//go:build integration

package integration

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/protobuf/proto"

	pb "github.com/golang/groupcache/groupcachepb"

	"github.com/imagefs/imagefs/test/labtest"
)

// Peer fill (issue 15): four mounts of one container stand for four
// hypervisor hosts, each with its own process, mountpoint and cache
// directory, and its peer port on its own loopback address
// (127.0.0.2..5; Linux routes all of 127/8 to lo). Their Swift requests go
// through one fault proxy, which counts the data the fleet fetched.

const peerImage = 128 << 20

// fleet is n hosts of one container, peers of each other.
type fleet struct {
	hosts   []*labtest.Daemon
	metrics []string // each host's --metrics-addr
	addrs   []string // each host's peer address
	key     string
}

// peerKeyFile writes a fleet key and returns its path and the key.
func peerKeyFile(t *testing.T) (string, string) {
	t.Helper()
	key := fmt.Sprintf("fleet-key-%d-0123456789", time.Now().UnixNano())
	p := filepath.Join(t.TempDir(), "peer.key")
	if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, key
}

// peerPort finds a port free on every address of the fleet.
func peerPort(t *testing.T, n int) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		free := true
		for i := 1; i < n; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", 2+i, port))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return port
		}
	}
	t.Fatal("no port free on 127.0.0.2-5")
	return 0
}

// startFleet mounts c on n hosts whose peer addresses are 127.0.0.2...;
// the hosts listed in skip are not started (the test plays them).
func startFleet(t *testing.T, c string, fp *labtest.FaultProxy, n int, skip ...int) *fleet {
	t.Helper()
	keyFile, key := peerKeyFile(t)
	port := peerPort(t, n)
	f := &fleet{key: key}
	for i := range n {
		f.addrs = append(f.addrs, fmt.Sprintf("127.0.0.%d:%d", 2+i, port))
	}
	var wg sync.WaitGroup
	f.hosts, f.metrics = make([]*labtest.Daemon, n), make([]string, n)
	for i := range n {
		if containsInt(skip, i) {
			continue
		}
		f.metrics[i] = freeAddr(t)
		args := []string{"--os-storage-url", fp.StorageURL, "--cache-dir", filepath.Join(t.TempDir(), "cache"),
			"--metrics-addr", f.metrics[i], "--peers", strings.Join(f.addrs, ","), "--peer-listen", f.addrs[i],
			"--peer-key-file", keyFile}
		wg.Go(func() { f.hosts[i] = labtest.Mount(t, c, labtest.MountOpts{Args: args}) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return f
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// storm reads name on every running host at once and returns each
// host's error (nil: the sha256 is want).
func (f *fleet) storm(name, want string) []error {
	errs := make([]error, len(f.hosts))
	var wg sync.WaitGroup
	for i, d := range f.hosts {
		if d == nil {
			continue
		}
		wg.Go(func() {
			if err := checkSHA256(d.Path(name), want); err != nil {
				errs[i] = fmt.Errorf("host %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	return errs
}

// sum adds a metric over the running hosts.
func (f *fleet) sum(t *testing.T, sample string) float64 {
	var s float64
	for i, d := range f.hosts {
		if d != nil && f.metrics[i] != "" {
			s += metric(t, f.metrics[i], sample)
		}
	}
	return s
}

// writeImage copies a random image into c through a mount of its own (so
// that it has the block digests imagefs writes) and returns its sha256.
func writeImage(t *testing.T, d *labtest.Daemon, name string, size int64, seed uint64) string {
	t.Helper()
	src, sum := labtest.RandomFile(t, size, seed)
	labtest.RunCmd(t, "cp", src, d.Path(name))
	return sum
}

const (
	mPeers    = `imagefs_peer_fill_bytes_total{source="peers"}`
	mSwift    = `imagefs_peer_fill_bytes_total{source="swift"}`
	mRejected = "imagefs_peer_rejected_total"
	mRefused  = "imagefs_peer_refused_total"
	mServed   = "imagefs_peer_served_bytes_total"
)

// TestPeerStorm: a cold boot storm of four hosts on one image. Every host
// reads it right, the fleet fetches it from Swift about once (not four
// times), most of each host's blocks come from their owners; and the peer
// port answers nobody without the fleet's key.
func TestPeerStorm(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	w := labtest.Mount(t, c, labtest.MountOpts{})
	sum := writeImage(t, w, "golden.img", peerImage, 151)
	w.Stop()

	fp := labtest.NewFaultProxy(t)
	f := startFleet(t, c, fp, 4)
	_, b0 := fp.DataGETs()
	start := time.Now()
	if err := errors.Join(f.storm("golden.img", sum)...); err != nil {
		t.Fatal(err)
	}
	_, b1 := fp.DataGETs()
	swift := b1 - b0
	t.Logf("storm of 4 hosts on %d MiB: %v, Swift data %d bytes (%.2fx the image), from peers %.0f, served %.0f",
		peerImage>>20, time.Since(start), swift, float64(swift)/peerImage, f.sum(t, mPeers), f.sum(t, mServed))
	if float64(swift) > 1.1*peerImage {
		t.Errorf("the fleet fetched %.2fx the image from Swift, want at most 1.1x", float64(swift)/peerImage)
	}
	for i := range f.hosts {
		// Each host owns about a quarter of the blocks and gets the rest
		// from their owners.
		if got := metric(t, f.metrics[i], mPeers); got < peerImage/2 {
			t.Errorf("host %d got %.0f bytes from peers, want most of the image", i, got)
		}
	}
	if got := f.sum(t, mRejected); got != 0 {
		t.Errorf("%.0f answers of honest peers rejected", got)
	}
	for i, d := range f.hosts {
		if strings.Contains(d.LogText(), f.key) {
			t.Errorf("host %d logged the fleet's key", i)
		}
	}

	t.Run("strangers", func(t *testing.T) {
		base := "http://" + f.addrs[0] + "/_imagefs_peer/imagefs-blocks-1/"
		key := "1." + b64("etag") + ".1048576.262144.0." + b64(c+"_segments") + "." + b64("golden.img/x/00000000")
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		for _, tc := range []struct{ name, auth string }{
			{"no signature", ""},
			{"wrong key", ts + ":" + peerSign("not the fleet's key", "req", ts, "/_imagefs_peer/imagefs-blocks-1/"+key)},
			{"replayed an hour later", strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10) + ":" + peerSign(f.key, "req", ts, "/_imagefs_peer/imagefs-blocks-1/"+key)},
		} {
			req, _ := http.NewRequest("GET", base+key, nil)
			if tc.auth != "" {
				req.Header.Set("X-Imagefs-Peer-Auth", tc.auth)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusForbidden {
				t.Errorf("%s: HTTP %d (%q), want 403", tc.name, res.StatusCode, body)
			}
		}
		if got := metric(t, f.metrics[0], mRefused); got < 3 {
			t.Errorf("%s is %.0f, want 3", mRefused, got)
		}
	})
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// peerSign is the fleet's HMAC, as cache/peer.go computes it.
func peerSign(key string, parts ...string) string {
	m := hmac.New(sha256.New, []byte(key))
	for _, s := range parts {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// TestPeerKilledMidStorm: a host killed (SIGKILL) in the middle of a storm
// costs the others a bounded delay, never their bytes: they finish, right.
func TestPeerKilledMidStorm(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	w := labtest.Mount(t, c, labtest.MountOpts{})
	sum := writeImage(t, w, "golden.img", peerImage, 152)
	w.Stop()

	fp := labtest.NewFaultProxy(t)
	f := startFleet(t, c, fp, 4)
	victim := f.hosts[3]
	done := make(chan []error)
	start := time.Now()
	go func() { done <- f.storm("golden.img", sum) }()
	// Kill it once it has served the others part of its blocks.
	for deadline := time.Now().Add(60 * time.Second); metric(t, f.metrics[3], mServed) < peerImage/16; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("host 3 served nothing to its peers within 60 s")
		}
	}
	victim.Kill()
	errs := <-done
	took := time.Since(start)
	for i := range 3 {
		if errs[i] != nil {
			t.Error(errs[i])
		}
	}
	t.Logf("storm with host 3 killed: %v", took)
	if took > 90*time.Second {
		t.Errorf("the storm took %v with a dead peer", took)
	}
	f.hosts[3] = nil
	if got := f.sum(t, "imagefs_peer_errors_total"); got == 0 {
		t.Error("no peer error counted after a peer was killed")
	}
}

// TestPeerLiar: a fleet member (it has the key) that answers with one bit
// flipped in every block: its bytes are rejected, counted, and the other
// hosts fetch those blocks from Swift; every host reads the image right.
func TestPeerLiar(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	w := labtest.Mount(t, c, labtest.MountOpts{})
	sum := writeImage(t, w, "golden.img", 64<<20, 153)
	w.Stop()

	fp := labtest.NewFaultProxy(t)
	f := startFleet(t, c, fp, 4, 3)
	// Host 3 is the liar: the test, signing with the fleet's key, serving
	// the real bytes from Swift with one bit flipped.
	l, err := net.Listen("tcp", f.addrs[3])
	if err != nil {
		t.Fatal(err)
	}
	var lies sync.WaitGroup
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		k := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		p := strings.Split(k, ".")
		if len(p) != 7 {
			http.Error(rw, "bad key", 400)
			return
		}
		dec := func(s string) string { b, _ := base64.RawURLEncoding.DecodeString(s); return string(b) }
		size, _ := strconv.ParseInt(p[2], 10, 64)
		block, _ := strconv.ParseInt(p[3], 10, 64)
		idx, _ := strconv.ParseInt(p[4], 10, 64)
		lo, hi := idx*block, min((idx+1)*block, size)
		rc, err := labtest.Swift.Get(r.Context(), dec(p[5]), dec(p[6]), lo, hi-lo, dec(p[1]))
		if err != nil {
			http.Error(rw, err.Error(), 500)
			return
		}
		v, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || len(v) == 0 {
			http.Error(rw, "short", 500)
			return
		}
		v[len(v)/3] ^= 0x08
		body, _ := proto.Marshal(&pb.GetResponse{Value: v})
		auth := r.Header.Get("X-Imagefs-Peer-Auth")
		rw.Header().Set("X-Imagefs-Peer-Sig", peerSign(f.key, "ans", auth[strings.IndexByte(auth, ':')+1:], string(body)))
		rw.Write(body)
	})}
	lies.Go(func() { _ = srv.Serve(l) })
	defer func() { srv.Close(); lies.Wait() }()

	errs := f.storm("golden.img", sum)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := f.sum(t, mRejected); got < 3 {
		t.Errorf("%s over the honest hosts is %.0f, want at least one each", mRejected, got)
	}
	if got := f.sum(t, "imagefs_peer_fallbacks_total"); got == 0 {
		t.Error("no fallback to Swift counted")
	}
}

// TestPeerOverwriteDuringStorm: an image overwritten while the fleet
// reads it: the readers that opened the old version read it exactly, and
// every host then reads the new version exactly (its blocks have new
// keys, so no peer serves old bytes for them).
func TestPeerOverwriteDuringStorm(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	w := labtest.Mount(t, c, labtest.MountOpts{})
	old := writeImage(t, w, "golden.img", 96<<20, 154)
	src, sum := labtest.RandomFile(t, 96<<20, 155)

	fp := labtest.NewFaultProxy(t)
	f := startFleet(t, c, fp, 4)
	// Every host opens the old version, then the storm reads it while
	// the writer commits the new one.
	files := make([]*os.File, 4)
	for i, d := range f.hosts {
		fh, err := os.Open(d.Path("golden.img"))
		if err != nil {
			t.Fatal(err)
		}
		files[i] = fh
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cp := exec.CommandContext(ctx, "cp", src, w.Path("golden.img"))
	var out []byte
	var cpErr error
	var wg sync.WaitGroup
	wg.Go(func() { out, cpErr = cp.CombinedOutput() })
	errs := make([]error, 4)
	for i, fh := range files {
		wg.Go(func() {
			defer fh.Close()
			h := sha256.New()
			if _, err := io.Copy(h, fh); err != nil {
				errs[i] = fmt.Errorf("host %d, old version: %w", i, err)
			} else if got := hex.EncodeToString(h.Sum(nil)); got != old {
				errs[i] = fmt.Errorf("host %d read %s of the old version, want %s", i, got, old)
			}
		})
	}
	wg.Wait()
	if cpErr != nil {
		t.Fatalf("overwrite: %v: %s", cpErr, out)
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the attribute cache
	if err := errors.Join(f.storm("golden.img", sum)...); err != nil {
		t.Fatal(err)
	}
	if got := f.sum(t, mRejected); got != 0 {
		t.Errorf("%.0f peer answers rejected in an honest fleet", got)
	}
}

// TestPeerBadInput: peer settings that cannot work fail the mount at
// once, with what is wrong and what to do, and nothing mounted.
func TestPeerBadInput(t *testing.T) {
	t.Parallel()
	c := labtest.NewContainer(t)
	keyFile, _ := peerKeyFile(t)
	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("tiny\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	peers := "127.0.0.2:7474,127.0.0.3:7474"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--peers", peers, "--peer-key-file", keyFile}, "--peers needs --peer-listen"},
		{[]string{"--peers", peers, "--peer-listen", "127.0.0.2:7474"}, "--peers needs --peer-key-file"},
		{[]string{"--peers", peers, "--peer-listen", "0.0.0.0:7474", "--peer-key-file", keyFile}, "not a name, not every interface"},
		{[]string{"--peers", peers, "--peer-listen", "127.0.0.2:7474", "--peer-key-file", short}, "the key is too short"},
		{[]string{"--peers", peers, "--peer-listen", "127.0.0.2:7474", "--peer-key-file", "/nonexistent/peer.key"}, "--peer-key-file /nonexistent/peer.key: no such file or directory"},
		{[]string{"--peers", peers, "--peer-listen", "127.0.0.4:7474", "--peer-key-file", keyFile}, "--peer-listen 127.0.0.4:7474 is not among the peers"},
		{[]string{"--peer-listen", "127.0.0.2:7474"}, "need --peers"},
	} {
		labtest.MountFails(t, nil, append(tc.args, c, t.TempDir()), 1, tc.want)
	}
}

//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/test/labtest"
)

// malformedLimit bounds each operation on a malformed answer: it must
// fail (or work) well within it, never hang.
const malformedLimit = 60 * time.Second

// TestMalformedAnswers: a proxy in front of the lab's Swift gives answers
// that break Swift's rules, to a real mount: /info with
// max_manifest_segments 1, HEADs without a Content-Length or with a
// negative one, an SLO that references itself through another (built in
// Swift for real), one nested 20 levels deep (real too), a manifest of
// 100,001 entries and a nesting of 1000 × 1001 (made up by the proxy), a
// listing whose pages repeat for ever. Each operation fails with EIO in
// bounded time and memory, with a log line saying what was wrong (or, for
// /info, the mount uses Swift's defaults and says so); the daemon keeps
// answering and exits cleanly.
func TestMalformedAnswers(t *testing.T) {
	c := labtest.NewContainer(t)
	sc := c + "_segments"
	ctx := t.Context()
	if err := labtest.Swift.CreateContainer(ctx, sc); err != nil {
		t.Fatal(err)
	}
	ok := labtest.Pattern{Seed: 90, Size: 64 << 10}
	labtest.PutPlain(t, c, "ok.img", ok, ok.Size)
	seg := labtest.Pattern{Seed: 91, Size: 4096}
	labtest.PutPlain(t, sc, "s", seg, seg.Size)
	segInfo, err := labtest.Swift.Head(ctx, sc, "s")
	if err != nil {
		t.Fatal(err)
	}
	// A made-up leaf entry: byte 0 of s, pinned to its real ETag.
	leafJSON := fmt.Sprintf(`{"name":"/%s/s","bytes":4096,"hash":%q,"range":"0-0"}`, sc, segInfo.ETag)
	for _, name := range []string{"nocl.img", "negcl.img"} {
		labtest.PutPlain(t, c, name, ok, ok.Size)
	}
	slo := func(name string, ref segments.ManifestEntry) {
		t.Helper()
		if _, err := labtest.Swift.PutManifest(ctx, c, name, []segments.ManifestEntry{ref}, segments.PutOptions{}); err != nil {
			t.Fatalf("put manifest %s: %v", name, err)
		}
	}
	leaf := segments.ManifestEntry{Container: sc, Object: "s"}
	// A cycle, for real: B -> s, A -> B, then B -> A.
	slo("cyc-b.img", leaf)
	slo("cyc-a.img", segments.ManifestEntry{Container: c, Object: "cyc-b.img"})
	slo("cyc-b.img", segments.ManifestEntry{Container: c, Object: "cyc-a.img"})
	// 20 levels: deep-01 -> s, deep-02 -> deep-01, ..., deep.img -> deep-19.
	slo("deep-01", leaf)
	for i := 2; i <= 20; i++ {
		name := fmt.Sprintf("deep-%02d", i)
		if i == 20 {
			name = "deep.img"
		}
		slo(name, segments.ManifestEntry{Container: c, Object: fmt.Sprintf("deep-%02d", i-1)})
	}
	slo("fanout.img", leaf) // its manifest GET is made up: 100,001 entries
	for _, name := range []string{"loop/a", "loop/b"} {
		labtest.PutPlain(t, c, name, ok, 1)
	}

	info := realInfo(t)
	info["slo"].(map[string]any)["max_manifest_segments"] = 1
	infoBody, _ := json.Marshal(info)

	p := labtest.NewAnswerProxy(t)
	p.SetAnswer(func(w http.ResponseWriter, r *http.Request) bool {
		q := r.URL.Query()
		manifest := r.Method == http.MethodGet && q.Get("multipart-manifest") == "get"
		switch {
		case r.URL.Path == "/info":
			w.Header().Set("Content-Type", "application/json")
			w.Write(infoBody)
		case r.Method == http.MethodHead && r.URL.Path == p.Path(c, "nocl.img"):
			labtest.RawAnswer(w, `200 OK`+"\r\n"+`Etag: "0123456789abcdef0123456789abcdef"`+"\r\nContent-Type: application/octet-stream")
		case r.Method == http.MethodHead && r.URL.Path == p.Path(c, "negcl.img"):
			labtest.RawAnswer(w, "200 OK\r\nContent-Length: -5")
		case manifest && r.URL.Path == p.Path(c, "fanout.img"):
			manifestOf(w, 100_001, leafJSON)
		case r.Method == http.MethodHead && r.URL.Path == p.Path(c, "wide.img"):
			w.Header().Set("X-Static-Large-Object", "True")
			w.Header().Set("Etag", `"wide"`)
			w.Header().Set("Content-Length", "1001000")
			w.Header().Set("Last-Modified", "Tue, 01 Dec 2026 22:34:44 GMT")
		case manifest && r.URL.Path == p.Path(c, "wide.img"):
			manifestOf(w, 1000, fmt.Sprintf(`{"name":"/%s/wide-sub","bytes":1001,"hash":"sub","sub_slo":true}`, c))
		case manifest && r.URL.Path == p.Path(c, "wide-sub"):
			manifestOf(w, 1001, leafJSON)
		case r.Method == http.MethodGet && r.URL.Path == p.Path(c, "") && strings.HasPrefix(q.Get("prefix"), "loop/"):
			// The same page, whatever the marker.
			fmt.Fprint(w, `[{"name":"loop/a","bytes":1,"hash":"h","content_type":"application/octet-stream","last_modified":"2026-12-01T22:34:44.000000"},`+
				`{"name":"loop/b","bytes":1,"hash":"h","content_type":"application/octet-stream","last_modified":"2026-12-01T22:34:44.000000"}]`)
		default:
			return false
		}
		return true
	})
	d := labtest.Mount(t, c, labtest.MountOpts{Args: []string{"--os-storage-url", p.StorageURL, "--segment-size", "1MiB", "--retry-budget", "10s"}})

	t.Run("info max_manifest_segments 1", func(t *testing.T) {
		// The mount shows before the daemon logs it.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(d.LogText(), "max_manifest_segments=1000") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if log := d.LogText(); !strings.Contains(log, "slo.max_manifest_segments is 1") || !strings.Contains(log, "max_manifest_segments=1000") {
			t.Errorf("the log does not say /info's limit was replaced by the default 1000")
		}
		// 5 segments: with one entry per manifest, nesting would never end.
		data := labtest.Pattern{Seed: 92, Size: 5<<20 + 3}.Bytes(0, 5<<20+3)
		took, err := within(t, "write", func() error { return os.WriteFile(d.Path("new.img"), data, 0o644) })
		if err != nil {
			t.Fatalf("write with /info's max_manifest_segments 1: %v (after %v)", err, took)
		}
		if back, err := os.ReadFile(d.Path("new.img")); err != nil || !bytes.Equal(back, data) {
			t.Errorf("new.img reads back wrong (%v)", err)
		}
	})

	for _, tc := range []struct {
		name, path string
		op         func(path string) error
		log        []string // what the failure's log line must say (a|b: either)
	}{
		{"HEAD without Content-Length", "nocl.img", stat, []string{"nocl.img", "no Content-Length header"}},
		{"HEAD with a negative Content-Length", "negcl.img", stat, []string{"negcl.img", `bad Content-Length \"-5\"`}},
		{"cyclic SLO", "cyc-a.img", read, []string{"cyc-", "references itself|cycle"}},
		{"SLO nested 20 levels", "deep.img", read, []string{"deep", "nested more than 10 levels"}},
		{"manifest of 100,001 entries", "fanout.img", read, []string{"fanout.img", "more than 100000 entries"}},
		// Open only: were it to open, reading would be a GET per byte.
		{"1000 manifests of 1001 entries", "wide.img", open, []string{"wide", "more than 1000000 segments"}},
		{"listing that repeats for ever", "loop", readDir, []string{"the listing does not advance"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(d.LogText())
			took, err := within(t, tc.name, func() error { return tc.op(d.Path(tc.path)) })
			t.Logf("%s: %v after %v", tc.name, err, took.Round(time.Millisecond))
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("%s: %v, want EIO", tc.path, err)
			}
			line := failureLine(d.LogText()[before:])
			for _, w := range tc.log {
				if !containsAny(line, strings.Split(w, "|")) {
					t.Errorf("the failure's log line %q does not say %q", line, w)
				}
			}
		})
	}

	t.Run("still answering", func(t *testing.T) {
		_, err := within(t, "read ok.img", func() error {
			b, err := os.ReadFile(d.Path("ok.img"))
			if err == nil && string(b) != string(ok.Bytes(0, ok.Size)) {
				err = errors.New("wrong data")
			}
			return err
		})
		if err != nil {
			t.Errorf("a good file after the bad answers: %v", err)
		}
		if rss := d.PeakRSS(); rss > 512<<20 {
			t.Errorf("peak RSS %d MiB: the bad answers were not bounded in memory", rss>>20)
		} else {
			t.Logf("peak RSS %d MiB", rss>>20)
		}
	})
}

// realInfo is the lab Swift's /info.
func realInfo(t *testing.T) map[string]any {
	t.Helper()
	resp, err := http.Get(os.Getenv("LAB_SWIFT_URL") + "/info")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	return info
}

// manifestOf writes a multipart-manifest=get answer of n times entry.
func manifestOf(w http.ResponseWriter, n int, entry string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString("[")
	for i := range n {
		if i > 0 {
			bw.WriteString(",")
		}
		if _, err := bw.WriteString(entry); err != nil {
			return // the reader had enough
		}
	}
	bw.WriteString("]")
	bw.Flush()
}

// within runs op, failing the test if it does not return within
// malformedLimit; it returns how long op took and its error.
func within(t *testing.T, what string, op func() error) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(malformedLimit):
		t.Fatalf("%s: no answer within %v", what, malformedLimit)
		return 0, nil
	}
}

func stat(path string) error { _, err := os.Stat(path); return err }

func read(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

func readDir(path string) error { _, err := os.ReadDir(path); return err }

func open(path string) error {
	f, err := os.Open(path)
	if err == nil {
		f.Close()
	}
	return err
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// failureLine is the first "operation failed" line of a log, or "".
func failureLine(log string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `msg="operation failed"`) {
			return l
		}
	}
	return ""
}

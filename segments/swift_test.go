package segments

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ncw/swift/v2"
)

// staticAuth hands ncw/swift a fixed storage URL and token.
type staticAuth struct{ url string }

func (a staticAuth) Request(context.Context, *swift.Connection) (*http.Request, error) {
	return nil, nil
}
func (a staticAuth) Response(context.Context, *http.Response) error { return nil }
func (a staticAuth) StorageUrl(bool) string                         { return a.url }
func (a staticAuth) Token() string                                  { return "tok" }
func (a staticAuth) CdnUrl() string                                 { return "" }

// badSwift is an HTTP server that answers as h does, with a SwiftStore
// (retried, with a budget that a retried bad answer would exceed) on it,
// and the number of requests it got.
func badSwift(t *testing.T, h http.HandlerFunc) (*Retrying, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	st := NewSwiftStore(SwiftOptions{Auth: staticAuth{srv.URL + "/v1/AUTH_test"}, ConnectTimeout: 10 * time.Second, Timeout: 10 * time.Second})
	return &Retrying{ObjectStore: st, P: RetryPolicy{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond, Budget: 2 * time.Second}}, &n
}

// rawAnswer writes an HTTP answer byte for byte, past net/http's checks.
func rawAnswer(w http.ResponseWriter, head string) {
	c, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	defer c.Close()
	buf.WriteString("HTTP/1.1 " + head + "\r\nConnection: close\r\n\r\n")
	buf.Flush()
}

// wantBad checks that err is a bad answer saying want, from one request.
func wantBad(t *testing.T, what string, err error, n *atomic.Int64, want string) {
	t.Helper()
	var ba *BadAnswerError
	if !errors.As(err, &ba) || !errors.Is(err, ErrBadAnswer) || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: %v; want a bad answer saying %q", what, err, want)
	}
	if ok, _ := retryable(err); ok {
		t.Errorf("%s: %v is retried", what, err)
	}
	if got := n.Swap(0); got > 2 { // ncw/swift tries a failed HEAD twice
		t.Errorf("%s: %d requests", what, got)
	}
}

func TestSwiftHeadBadAnswers(t *testing.T) {
	st, n := badSwift(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/AUTH_test/c/nocl":
			rawAnswer(w, "200 OK\r\nEtag: abc")
		case "/v1/AUTH_test/c/negative":
			rawAnswer(w, "200 OK\r\nContent-Length: -5")
		case "/v1/AUTH_test/c/huge":
			rawAnswer(w, "200 OK\r\nContent-Length: 18446744073709551615")
		case "/v1/AUTH_test/c/dlo":
			w.Header().Set("X-Object-Manifest", "no-slash")
			w.Header().Set("Content-Length", "0")
		case "/v1/AUTH_test/c/ok":
			w.Header().Set("X-Object-Manifest", "c_segments/ok/")
			w.Header().Set("Content-Length", "42")
		}
	})
	ctx := t.Context()
	for name, want := range map[string]string{"nocl": "no Content-Length", "negative": `bad Content-Length "-5"`,
		"huge": "bad Content-Length", "dlo": "not container/prefix"} {
		_, err := st.Head(ctx, "c", name)
		wantBad(t, name, err, n, want)
	}
	in, err := st.Head(ctx, "c", "ok")
	if err != nil || in.Size != 42 || in.DLO != "c_segments/ok/" {
		t.Errorf("a good HEAD: %+v, %v", in, err)
	}
}

func TestSwiftListBadAnswers(t *testing.T) {
	defer func(n int) { maxListEntries = n }(maxListEntries)
	maxListEntries = 5000
	st, n := badSwift(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		marker := q.Get("marker")
		switch r.URL.Path {
		case "/v1/AUTH_test/repeat":
			fmt.Fprint(w, `[{"name":"a","bytes":1},{"name":"b","bytes":2}]`)
		case "/v1/AUTH_test/endless": // advances for ever, 1000 names a page
			var b strings.Builder
			b.WriteString("[")
			for i := range 1000 {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, `{"name":"%s%04d"}`, marker, i)
			}
			b.WriteString("]")
			fmt.Fprint(w, b.String())
		case "/v1/AUTH_test/outside":
			fmt.Fprint(w, `[{"name":"zzz"}]`)
		case "/v1/AUTH_test/negative":
			fmt.Fprint(w, `[{"name":"p/a","bytes":-3}]`)
		case "/v1/AUTH_test/huge": // one page larger than maxListPage
			bw := bufio.NewWriter(w)
			bw.WriteString(`[{"name":"p/`)
			for range maxListPage / 1024 {
				bw.WriteString(strings.Repeat("x", 1024))
			}
			bw.WriteString(`"}]`)
			bw.Flush()
		case "/v1/AUTH_test/short": // Swift's short pages: 2500 names in pages of 700
			var names []string
			for i := range 2500 {
				if name := fmt.Sprintf("p/%04d", i); name > marker {
					names = append(names, fmt.Sprintf(`{"name":%q,"bytes":%d,"last_modified":"2026-12-01T22:34:34.643740"}`, name, i))
				}
			}
			fmt.Fprint(w, "["+strings.Join(names[:min(700, len(names))], ",")+"]")
		}
	})
	ctx := t.Context()
	count := func(c, prefix string) (int, error) {
		k := 0
		err := st.List(ctx, c, prefix, 0, func(Info) error { k++; return nil })
		return k, err
	}
	for c, want := range map[string]string{"repeat": "does not advance", "endless": "past 5000 names", "outside": "not under the prefix",
		"negative": "negative size", "huge": "larger than"} {
		k, err := count(c, "p/")
		if c == "repeat" || c == "endless" {
			k, err = count(c, "")
		}
		wantBad(t, c, err, &atomic.Int64{}, want)
		if c == "repeat" && k != 2 {
			t.Errorf("repeating pages: %d names given, want the first page's 2", k)
		}
		n.Store(0)
	}
	k, err := count("short", "p/")
	if err != nil || k != 2500 {
		t.Errorf("short pages: %d names, %v", k, err)
	}
}

func TestSwiftManifestBounds(t *testing.T) {
	entry := `{"name":"/c_segments/s","bytes":1,"hash":"h"}`
	st, n := badSwift(t, func(w http.ResponseWriter, r *http.Request) {
		bw := bufio.NewWriter(w)
		defer bw.Flush()
		switch r.URL.Path {
		case "/v1/AUTH_test/c/fanout":
			bw.WriteString("[" + entry)
			for range maxManifestEntries {
				bw.WriteString("," + entry)
			}
			bw.WriteString("]")
		case "/v1/AUTH_test/c/big":
			bw.WriteString(`[{"name":"/c/`)
			for range maxManifestBody / 1024 {
				bw.WriteString(strings.Repeat("y", 1024))
			}
			bw.WriteString(`"}]`)
		case "/v1/AUTH_test/c/cut": // ends cleanly in the middle of the JSON
			bw.WriteString("[" + entry + ",")
		case "/v1/AUTH_test/c/name":
			bw.WriteString(`[{"name":"c_segments/s","bytes":1}]`)
		case "/v1/AUTH_test/c/range":
			bw.WriteString(`[{"name":"/c/s","bytes":10,"range":"5-10"}]`)
		case "/v1/AUTH_test/c/overflow":
			bw.WriteString(`[{"name":"/c/s","bytes":9223372036854775807},{"name":"/c/s","bytes":1}]`)
		case "/v1/AUTH_test/c/ok":
			bw.WriteString(`[{"name":"/c/s","bytes":10,"range":"2-5","hash":"h"},{"name":"/c/m","bytes":3,"sub_slo":true}]`)
		}
	})
	ctx := t.Context()
	for obj, want := range map[string]string{"fanout": "more than 100000 entries", "big": "larger than 67108864 bytes", "cut": "ends early",
		"name": "not /container/object", "range": "beyond the segment", "overflow": "more bytes than a file can have"} {
		_, err := st.GetManifest(ctx, "c", obj)
		wantBad(t, obj, err, n, want)
	}
	es, err := st.GetManifest(ctx, "c", "ok")
	want := []ManifestEntry{{Container: "c", Object: "s", ETag: "h", Size: 10, Offset: 2, Length: 4}, {Container: "c", Object: "m", Size: 3, SubSLO: true}}
	if err != nil || fmt.Sprint(es) != fmt.Sprint(want) {
		t.Errorf("a good manifest: %+v, %v", es, err)
	}
}

func TestSwiftInfoLimits(t *testing.T) {
	var answer atomic.Value
	st, _ := badSwift(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/info" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, answer.Load().(string))
	})
	ctx := t.Context()
	for _, tc := range []struct {
		info     string
		want     Limits
		problems []string
	}{
		{`{"slo": {"max_manifest_segments": 1000, "max_manifest_size": 8388608}, "swift": {"max_file_size": 5368709122}, "bulk_delete": {}}`,
			Limits{MaxManifestSegments: 1000, MaxManifestSize: 8 << 20, MaxFileSize: 5368709122, ListingLimit: 10000, SLO: true, BulkDelete: true}, nil},
		{`{"swift": {"container_listing_limit": 2000}}`, Limits{MaxManifestSegments: 1000, MaxManifestSize: 8 << 20, MaxFileSize: 5 << 30, ListingLimit: 2000}, nil},
		{`{"swift": {"container_listing_limit": 0}}`, Limits{MaxManifestSegments: 1000, MaxManifestSize: 8 << 20, MaxFileSize: 5 << 30, ListingLimit: 10000},
			[]string{"container_listing_limit is 0"}},
		{`{"slo": {"max_manifest_segments": 1}}`, DefaultLimits, []string{"slo.max_manifest_segments is 1"}},
		{`{"slo": {"max_manifest_segments": 0, "max_manifest_size": -1}, "swift": {"max_file_size": 1e300}}`, DefaultLimits,
			[]string{"max_manifest_segments is 0", "max_manifest_size is -1", "max_file_size is 1e+300"}},
		{`{"slo": {"max_manifest_segments": -7, "max_manifest_size": 0}, "swift": {"max_file_size": 0}}`, DefaultLimits,
			[]string{"max_manifest_segments is -7", "max_manifest_size is 0", "max_file_size is 0"}},
		{`{"slo": {"max_manifest_segments": 1e12, "max_manifest_size": 10.5}, "swift": {"max_file_size": "big"}}`, DefaultLimits,
			[]string{"max_manifest_segments is 1000000000000", "max_manifest_size is 10.5", `max_file_size is "big"`}},
		{`{"slo": "yes"}`, DefaultLimits, []string{`slo is "yes", not an object`}},
		{`{"swift": {}}`, Limits{MaxManifestSegments: 1000, MaxManifestSize: 8 << 20, MaxFileSize: 5 << 30, ListingLimit: 10000}, nil},
	} {
		answer.Store(tc.info)
		l, err := st.Limits(ctx)
		if err != nil {
			t.Errorf("%s: %v", tc.info, err)
			continue
		}
		got := strings.Join(l.Problems, "\n")
		if len(l.Problems) != len(tc.problems) {
			t.Errorf("%s: problems %q, want %q", tc.info, l.Problems, tc.problems)
		}
		for _, p := range tc.problems {
			if !strings.Contains(got, p) {
				t.Errorf("%s: problems %q do not say %q", tc.info, got, p)
			}
		}
		l.Problems = nil
		if fmt.Sprint(l) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.info, l, tc.want)
		}
	}
	answer.Store(`{"slo": ` + strings.Repeat(" ", maxInfoBody) + `{}}`)
	if _, err := st.Limits(ctx); !errors.Is(err, ErrBadAnswer) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("an /info too large: %v", err)
	}
	answer.Store(`<html>`)
	if _, err := st.Limits(ctx); !errors.Is(err, ErrBadAnswer) {
		t.Errorf("an /info that is not JSON: %v", err)
	}
}

func TestRetryAfterBounds(t *testing.T) {
	now := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "3600": maxRetryAfter, "9223372036854775807": maxRetryAfter,
		"99999999999999999999999": maxRetryAfter, "-5": 0, "1.5": 0, "soon": 0,
		"Tue, 01 Dec 2026 22:00:30 GMT": 30 * time.Second, "Fri, 31 Dec 9999 23:59:59 GMT": maxRetryAfter, "Mon, 01 Jan 1900 00:00:00 GMT": 0} {
		if got := parseRetryAfterAt(v, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
	// A zero policy does not panic, and a server's wish is capped.
	if d := (RetryPolicy{}).backoff(1, 0); d <= 0 {
		t.Errorf("zero policy: %v", d)
	}
	if d := DefaultRetryPolicy.backoff(1, 1000*time.Hour); d != maxRetryAfter {
		t.Errorf("Retry-After of 1000 h: %v", d)
	}
}

// TestSwiftListPagesAndSLOBytes: listing pages ask for 10,000 names (the
// first for 1,000), or
// the cluster's container_listing_limit once /info was read (Swift
// refuses a larger limit with 412); an entry's swift_bytes (an SLO's
// total, from a container server that did not fold it into bytes) is its
// size; an SLO's slo_etag makes it the same version as its HEAD says;
// entries carry when their page was asked for.
func TestSwiftListPagesAndSLOBytes(t *testing.T) {
	var limits []string
	var info atomic.Value
	info.Store(`{"swift": {}}`)
	st, _ := badSwift(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/info" {
			fmt.Fprint(w, info.Load().(string))
			return
		}
		q := r.URL.Query()
		limits = append(limits, q.Get("limit"))
		if q.Get("marker") != "" {
			fmt.Fprint(w, `[]`)
			return
		}
		fmt.Fprint(w, `[{"name":"p/a-slo","bytes":312,"hash":"x","content_type":"application/octet-stream;swift_bytes=3145733","slo_etag":"\"12949e83a49a0989aa46ab7e249ca34d\""},`+
			`{"name":"p/b-odd","bytes":5,"content_type":"text/plain;swift_bytes=nope"}]`)
	})
	ctx := t.Context()
	before := time.Now()
	var got []Info
	if err := st.List(ctx, "c", "p/", '/', func(in Info) error { got = append(got, in); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Size != 3145733 || got[0].ContentType != "application/octet-stream" ||
		got[1].Size != 5 || got[1].ContentType != "text/plain;swift_bytes=nope" {
		t.Errorf("entries %+v", got)
	}
	head := Info{Size: 3145733, ETag: "12949e83a49a0989aa46ab7e249ca34d"}
	if !head.SameVersion(got[0]) || head.SameVersion(got[1]) || (Info{Size: 5}).SameVersion(got[0]) {
		t.Errorf("SameVersion: a HEAD's ETag %s against the listed %+v", head.ETag, got[0])
	}
	for _, in := range got {
		if !in.Listed() || in.ListedAt.Before(before) {
			t.Errorf("%s: ListedAt %v, want the time its page was asked for (after %v)", in.Name, in.ListedAt, before)
		}
	}
	info.Store(`{"swift": {"container_listing_limit": 700}}`)
	if _, err := st.Limits(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.List(ctx, "c", "p/", '/', func(Info) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1000", "10000", "700", "700"}; fmt.Sprint(limits) != fmt.Sprint(want) {
		t.Errorf("page limits asked %v, want %v", limits, want)
	}
}

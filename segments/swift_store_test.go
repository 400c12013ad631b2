package segments

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ncw/swift/v2"
)

// Unit tests of SwiftStore's own logic against an httptest server: the
// fallback of DeleteMany, re-authentication, the requests it sends. What
// Swift answers is RunStoreTests' job, against the lab.

// rotatingAuth is an Authenticator whose n-th authentication (from 1)
// gets storage URL base+"/v1/AUTH_<n>" and token "t<n>".
type rotatingAuth struct {
	base string
	n    atomic.Int64
}

func (a *rotatingAuth) Request(context.Context, *swift.Connection) (*http.Request, error) {
	a.n.Add(1)
	return nil, nil
}
func (a *rotatingAuth) Response(context.Context, *http.Response) error { return nil }
func (a *rotatingAuth) StorageUrl(bool) string {
	return fmt.Sprintf("%s/v1/AUTH_%d", a.base, a.n.Load())
}
func (a *rotatingAuth) Token() string  { return fmt.Sprintf("t%d", a.n.Load()) }
func (a *rotatingAuth) CdnUrl() string { return "" }

// request is what the test server saw of one request.
type request struct {
	Method, Path, Token string
	Query               url.Values
	Header              http.Header
	Body                string
}

// recorder is a test server that records requests and answers with h.
type recorder struct {
	mu   sync.Mutex
	reqs []request
}

func (rec *recorder) log() []request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.reqs)
}

// byMethod is the paths of the requests with that method, sorted.
func (rec *recorder) byMethod(m string) []string {
	var out []string
	for _, r := range rec.log() {
		if r.Method == m {
			out = append(out, r.Path)
		}
	}
	slices.Sort(out)
	return out
}

// fakeSwift starts a server answering with h, and a SwiftStore (without
// retries) on it whose authentications rotate.
func fakeSwift(t *testing.T, h func(w http.ResponseWriter, r request)) (*SwiftStore, *recorder, *rotatingAuth) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := request{Method: r.Method, Path: r.URL.Path, Token: r.Header.Get("X-Auth-Token"), Query: r.URL.Query(), Header: r.Header, Body: string(b)}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, req)
		rec.mu.Unlock()
		h(w, req)
	}))
	t.Cleanup(srv.Close)
	auth := &rotatingAuth{base: srv.URL}
	st := NewSwiftStore(SwiftOptions{Auth: auth, ConnectTimeout: 5 * time.Second, Timeout: 5 * time.Second})
	return st, rec, auth
}

// bulkAnswer writes a bulk delete's JSON answer.
func bulkAnswer(w http.ResponseWriter, status string, deleted, notFound int, errs [][]string) {
	if errs == nil {
		errs = [][]string{}
	}
	b, _ := json.Marshal(map[string]any{"Response Status": status, "Number Deleted": deleted,
		"Number Not Found": notFound, "Errors": errs, "Response Body": ""})
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func isBulk(r request) bool { return r.Method == "DELETE" && r.Query.Has("bulk-delete") }

func manyNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("seg/%05d", i)
	}
	return names
}

func TestSwiftDeleteManyBulk(t *testing.T) {
	st, rec, _ := fakeSwift(t, func(w http.ResponseWriter, r request) {
		if !isBulk(r) {
			http.Error(w, "not bulk", 500)
			return
		}
		n := strings.Count(r.Body, "\n")
		bulkAnswer(w, "200 OK", n-1, 1, nil) // one of each batch was missing
	})
	names := append(manyNames(1499), "dir/a b%ü")
	if err := st.DeleteMany(t.Context(), "c", names); err != nil {
		t.Fatal(err)
	}
	reqs := rec.log()
	if len(reqs) != 2 || !isBulk(reqs[0]) || !isBulk(reqs[1]) {
		t.Fatalf("%d requests, want 2 bulk deletes: %+v", len(reqs), reqs)
	}
	// The body names /container/object, URL-encoded, one a line, at most
	// 1000 a request.
	var sent []string
	for _, r := range reqs {
		lines := strings.Split(strings.TrimSuffix(r.Body, "\n"), "\n")
		if len(lines) > 1000 {
			t.Errorf("a bulk delete of %d names", len(lines))
		}
		for _, l := range lines {
			p, err := url.PathUnescape(l)
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, strings.TrimPrefix(p, "/c/"))
		}
	}
	if !slices.Equal(sent, names) {
		t.Errorf("bulk deletes named %d objects, want the %d given", len(sent), len(names))
	}
	if !strings.HasSuffix(reqs[1].Body, "\n/c/dir/a%20b%25%C3%BC\n") {
		t.Errorf("a name with a space, %% and ü is not sent URL-encoded: %q", reqs[1].Body[max(0, len(reqs[1].Body)-40):])
	}
	if err := st.DeleteMany(t.Context(), "c", nil); err != nil || len(rec.log()) != 2 {
		t.Errorf("DeleteMany of nothing: %v, %d requests more", err, len(rec.log())-2)
	}
}

// TestSwiftDeleteManyFallback: where bulk delete is refused, DeleteMany
// deletes one object a request (missing ones are fine), and does not try
// bulk delete again.
func TestSwiftDeleteManyFallback(t *testing.T) {
	for _, tc := range []struct {
		what   string
		refuse func(w http.ResponseWriter, r request)
	}{
		{"each sub-request denied (a service-token account)", func(w http.ResponseWriter, r request) {
			var errs [][]string
			for _, l := range strings.Fields(r.Body) {
				errs = append(errs, []string{l, "403 Forbidden"})
			}
			bulkAnswer(w, "400 Bad Request", 0, 0, errs)
		}},
		{"bulk delete forbidden", func(w http.ResponseWriter, r request) { http.Error(w, "no", http.StatusForbidden) }},
		{"no bulk middleware", func(w http.ResponseWriter, r request) { http.Error(w, "no", http.StatusMethodNotAllowed) }},
	} {
		t.Run(tc.what, func(t *testing.T) {
			st, rec, _ := fakeSwift(t, func(w http.ResponseWriter, r request) {
				switch {
				case isBulk(r):
					tc.refuse(w, r)
				case strings.HasSuffix(r.Path, "/missing"):
					http.NotFound(w, nil)
				default:
					w.WriteHeader(http.StatusNoContent)
				}
			})
			names := append(manyNames(20), "missing")
			if err := st.DeleteMany(t.Context(), "c", names); err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, n := range names {
				want = append(want, "/v1/AUTH_1/c/"+n)
			}
			slices.Sort(want)
			if got := rec.byMethod("DELETE"); len(got) != len(want)+1 || got[0] != "/v1/AUTH_1" || !slices.Equal(got[1:], want) {
				t.Errorf("DELETE requests %q, want one bulk delete and one for each of %q", got, want)
			}
			if !st.noBulk.Load() {
				t.Error("the refusal is not remembered")
			}
			before := len(rec.log())
			if err := st.DeleteMany(t.Context(), "c", []string{"x", "y"}); err != nil {
				t.Fatal(err)
			}
			for _, r := range rec.log()[before:] {
				if isBulk(r) {
					t.Error("bulk delete tried again after it was refused")
				}
			}
		})
	}
}

// TestSwiftDeleteManyBulkFails: a bulk delete that failed for a reason
// worth retrying (the cluster is busy) is DeleteMany's error, without one
// by one deletes and without giving up on bulk delete; one by one
// deletes that fail are the error too.
func TestSwiftDeleteManyBulkFails(t *testing.T) {
	var busy atomic.Bool
	busy.Store(true)
	st, rec, _ := fakeSwift(t, func(w http.ResponseWriter, r request) {
		switch {
		case isBulk(r) && busy.Load():
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case isBulk(r): // a sub-request failed in the cluster
			bulkAnswer(w, "502 Bad Gateway", 1, 0, [][]string{{"/c/seg/00001", "503 Service Unavailable"}})
		default:
			http.Error(w, "denied", http.StatusForbidden)
		}
	})
	err := st.DeleteMany(t.Context(), "c", manyNames(2))
	if ok, _ := retryable(err); !ok {
		t.Errorf("DeleteMany with bulk delete answering 503: %v, want an error worth retrying", err)
	}
	busy.Store(false)
	err = st.DeleteMany(t.Context(), "c", manyNames(2))
	if ok, _ := retryable(err); !ok {
		t.Errorf("DeleteMany with a bulk delete whose sub-request failed: %v, want an error worth retrying", err)
	}
	if got := rec.byMethod("DELETE"); len(got) != 2 || st.noBulk.Load() {
		t.Errorf("DELETE requests %q (noBulk %v), want the two bulk deletes only", got, st.noBulk.Load())
	}
	st.noBulk.Store(true)
	if err := st.DeleteMany(t.Context(), "c", manyNames(3)); !errors.Is(err, ErrAuth) {
		t.Errorf("DeleteMany whose deletes are denied: %v, want ErrAuth", err)
	}
}

// TestSwiftReauth: a 401 makes SwiftStore authenticate again and repeat
// the request once, with the new token at the new storage URL (a PUT
// with its body again); a second 401 is ErrAuth, worth retrying.
func TestSwiftReauth(t *testing.T) {
	var refuse atomic.Int64 // tokens up to t<refuse> are refused
	refuse.Store(1)
	st, rec, auth := fakeSwift(t, func(w http.ResponseWriter, r request) {
		var n int64
		fmt.Sscanf(r.Token, "t%d", &n)
		if n <= refuse.Load() || !strings.HasPrefix(r.Path, fmt.Sprintf("/v1/AUTH_%d/", n)) {
			http.Error(w, "expired", http.StatusUnauthorized)
			return
		}
		switch r.Method {
		case "HEAD":
			w.Header().Set("Content-Length", "5")
		case "PUT":
			w.Header().Set("Etag", md5Of(r.Body))
			w.WriteHeader(http.StatusCreated)
		}
	})
	in, err := st.Head(t.Context(), "c", "o")
	if err != nil || in.Size != 5 {
		t.Fatalf("Head across a re-authentication: %+v, %v", in, err)
	}
	if got := auth.n.Load(); got != 2 {
		t.Errorf("%d authentications, want 2", got)
	}
	refuse.Store(2)
	etag, err := st.Put(t.Context(), "c", "o", strings.NewReader("hello"), 5, md5Of("hello"), PutOptions{})
	if err != nil || etag != md5Of("hello") {
		t.Fatalf("Put across a re-authentication: %q, %v", etag, err)
	}
	reqs := rec.log()
	if last := reqs[len(reqs)-1]; last.Method != "PUT" || last.Body != "hello" || last.Path != "/v1/AUTH_3/c/o" {
		t.Errorf("the repeated PUT: %+v", last)
	}

	refuse.Store(1 << 40) // every token refused
	before := len(rec.log())
	_, err = st.Head(t.Context(), "c", "o")
	if !errors.Is(err, ErrAuth) {
		t.Errorf("Head with every token refused: %v, want ErrAuth", err)
	}
	if ok, _ := retryable(err); !ok {
		t.Errorf("a 401 after re-authenticating is not retried: %v", err)
	}
	if n := len(rec.log()) - before; n != 2 {
		t.Errorf("Head with every token refused: %d requests, want 2 (one re-authentication)", n)
	}
}

// TestSwiftRequests checks the requests the store's methods send.
func TestSwiftRequests(t *testing.T) {
	body := []byte("0123456789")
	var wholeOn200 atomic.Bool
	st, rec, _ := fakeSwift(t, func(w http.ResponseWriter, r request) {
		switch {
		case r.Method == "PUT" && r.Query.Get("multipart-manifest") == "put":
			w.Header().Set("Etag", `"manifest-etag"`)
			w.WriteHeader(http.StatusCreated)
		case r.Method == "PUT" && r.Path == "/v1/AUTH_1/c/liar":
			w.Header().Set("Etag", md5Of("other"))
			w.WriteHeader(http.StatusCreated)
		case r.Method == "PUT":
			w.Header().Set("Etag", md5Of(r.Body))
			w.WriteHeader(http.StatusCreated)
		case r.Method == "GET" && r.Path == "/v1/AUTH_1/c/short":
			w.Header().Set("Content-Length", "10")
			w.Write(body[:4])
		case r.Method == "GET" && r.Path == "/v1/AUTH_1/c/gone":
			http.NotFound(w, nil)
		case r.Method == "GET" && wholeOn200.Load():
			w.Write(body) // ignores Range
		case r.Method == "GET":
			hdr := r.Header.Clone()
			hdr.Del("If-Match") // ServeContent would compare it with no ETag
			http.ServeContent(w, &http.Request{Header: hdr, Method: "GET"}, "", time.Time{}, bytes.NewReader(body))
		case r.Method == "COPY":
			w.WriteHeader(http.StatusCreated)
		}
	})
	ctx := t.Context()
	last := func() request { reqs := rec.log(); return reqs[len(reqs)-1] }

	// Put: length, MD5, content type, metadata, DLO manifest.
	if _, err := st.Put(ctx, "c", "o", strings.NewReader("abc"), 3, md5Of("abc"),
		PutOptions{ContentType: "text/x", Meta: map[string]string{"mtime": "5"}, DLO: "c_segments/o/"}); err != nil {
		t.Fatal(err)
	}
	h := last().Header
	if h.Get("Etag") != md5Of("abc") || h.Get("Content-Type") != "text/x" || h.Get("X-Object-Meta-Mtime") != "5" ||
		h.Get("X-Object-Manifest") != "c_segments/o/" || last().Body != "abc" {
		t.Errorf("Put sent %+v", last())
	}
	// Put: Swift storing another ETag than the MD5 sent is an error.
	if _, err := st.Put(ctx, "c", "liar", strings.NewReader("abc"), 3, md5Of("abc"), PutOptions{}); err == nil {
		t.Error("Put whose answer has another ETag than the MD5 sent: no error")
	}

	// PutManifest: the JSON of multipart-manifest=put, nulls where the
	// ETag or size is left to Swift, ranges as first-last.
	etag, err := st.PutManifest(ctx, "c", "m", []ManifestEntry{{Container: "s", Object: "a b", ETag: "e1", Size: 10},
		{Container: "s", Object: "x", Offset: 2, Length: 3}}, PutOptions{})
	if err != nil || etag != "manifest-etag" {
		t.Fatalf("PutManifest: %q, %v", etag, err)
	}
	if want := `[{"path":"/s/a b","etag":"e1","size_bytes":10},{"path":"/s/x","etag":null,"size_bytes":null,"range":"2-4"}]`; last().Body != want ||
		last().Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("PutManifest sent %q (%s), want %q", last().Body, last().Header.Get("Content-Type"), want)
	}

	// Get: the Range header of [off, off+n); none for the whole object,
	// no request at all for no bytes; If-Match sent.
	for _, tc := range []struct {
		off, n     int64
		rng, bytes string
	}{{0, -1, "", "0123456789"}, {4, -1, "bytes=4-", "456789"}, {2, 3, "bytes=2-4", "234"}, {0, 10, "bytes=0-9", "0123456789"}} {
		got, err := readAll(st.Get(ctx, "c", "o", tc.off, tc.n, "e"))
		if err != nil || string(got) != tc.bytes || last().Header.Get("Range") != tc.rng || last().Header.Get("If-Match") != "e" {
			t.Errorf("Get [%d, +%d): %q, %v; sent Range %q If-Match %q", tc.off, tc.n, got, err, last().Header.Get("Range"), last().Header.Get("If-Match"))
		}
	}
	before := len(rec.log())
	if got, err := readAll(st.Get(ctx, "c", "o", 3, 0, "")); err != nil || len(got) != 0 || len(rec.log()) != before {
		t.Errorf("Get of no bytes: %q, %v, %d requests", got, err, len(rec.log())-before)
	}
	// A 200 to a Range: the whole object, which is fine from offset 0
	// only.
	wholeOn200.Store(true)
	if got, err := readAll(st.Get(ctx, "c", "o", 0, 10, "")); err != nil || string(got) != "0123456789" {
		t.Errorf("Get [0, +10) answered 200: %q, %v", got, err)
	}
	if _, err := st.Get(ctx, "c", "o", 4, 2, ""); err == nil {
		t.Error("Get [4, +2) answered 200 with the whole object: no error")
	}
	wholeOn200.Store(false)
	// A body shorter than its Content-Length is an error worth retrying
	// (and resuming), not a silent EOF.
	if got, err := readAll(st.Get(ctx, "c", "short", 0, -1, "")); err == nil {
		t.Errorf("a short body: %q, no error", got)
	} else if ok, _ := retryable(err); !ok {
		t.Errorf("a short body is not retried: %v", err)
	}
	if _, err := st.Get(ctx, "c", "gone", 0, -1, "e"); !errors.Is(err, ErrStale) || !errors.Is(err, ErrNotFound) {
		t.Errorf("Get with If-Match of a deleted object: %v, want ErrStale and ErrNotFound", err)
	}

	// Copy: COPY of the manifest itself, to an escaped Destination.
	if err := st.Copy(ctx, "c", "dir/src", "dir/a b%ü"); err != nil {
		t.Fatal(err)
	}
	if r := last(); r.Method != "COPY" || r.Path != "/v1/AUTH_1/c/dir/src" || r.Query.Get("multipart-manifest") != "get" ||
		r.Header.Get("Destination") != "c/dir/a%20b%25%C3%BC" {
		t.Errorf("Copy sent %s %s?%s Destination %q", r.Method, r.Path, r.Query.Encode(), r.Header.Get("Destination"))
	}
}

// readAll reads a Get's body to the end.
func readAll(rc io.ReadCloser, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func md5Of(s string) string {
	h := newMD5()
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}

// TestSwiftCancelCause: a call whose context was cancelled with a cause
// (errgroup cancels with the first error, which may be another call's
// StatusError; net/http returns the cause) fails with that cause inside
// its error, and leaves it alone: DeleteMany's parallel deletes raced on
// it, setting its RetryAfter.
func TestSwiftCancelCause(t *testing.T) {
	st, _, _ := fakeSwift(t, func(w http.ResponseWriter, r request) {
		w.Header().Set("Retry-After", "3")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})
	cause := &StatusError{Op: "DELETE", Object: "c/first", Code: 403, RetryAfter: 7 * time.Second}
	ctx, cancel := context.WithCancelCause(t.Context())
	cancel(cause)
	if _, err := st.Head(ctx, "c", "o"); err == nil {
		t.Error("Head with a cancelled context: no error")
	}
	if cause.RetryAfter != 7*time.Second || cause.Op != "DELETE" {
		t.Errorf("the cause was changed: %+v", cause)
	}
	// The call's own answer still carries its Retry-After.
	var se *StatusError
	if _, err := st.Head(t.Context(), "c", "o"); !errors.As(err, &se) || se.Code != 503 || se.RetryAfter != 3*time.Second {
		t.Errorf("Head answered 503 with Retry-After 3: %v (%+v)", err, se)
	}
}

// HeadAccount and HeadContainer read the counts and the quotas: a missing
// or unparsable count is a bad answer, a quota that is no number is none
// (as Swift's quota middlewares ignore it).
func TestSwiftStoreHeadAccountAndContainer(t *testing.T) {
	var headers http.Header
	var mu sync.Mutex
	st, rec, _ := fakeSwift(t, func(w http.ResponseWriter, r request) {
		mu.Lock()
		defer mu.Unlock()
		for k, v := range headers {
			w.Header()[k] = v
		}
		w.WriteHeader(http.StatusNoContent)
	})
	set := func(kv ...string) {
		mu.Lock()
		defer mu.Unlock()
		headers = http.Header{}
		for i := 0; i < len(kv); i += 2 {
			headers.Set(kv[i], kv[i+1])
		}
	}
	ctx := t.Context()

	set("X-Account-Bytes-Used", "1234", "X-Account-Object-Count", "5", "X-Account-Container-Count", "2",
		"X-Account-Meta-Quota-Bytes", "10000")
	ai, err := st.HeadAccount(ctx)
	if want := (AccountInfo{BytesUsed: 1234, Objects: 5, Containers: 2, QuotaBytes: 10000}); err != nil || ai != want {
		t.Errorf("HeadAccount: %+v, %v; want %+v", ai, err, want)
	}
	if got := rec.log(); len(got) != 1 || got[0].Method != "HEAD" || got[0].Path != "/v1/AUTH_1" {
		t.Errorf("requests %+v, want one HEAD of the account", got)
	}
	set("X-Account-Bytes-Used", "1234", "X-Account-Object-Count", "5", "X-Account-Container-Count", "2",
		"X-Account-Meta-Quota-Bytes", "lots")
	if ai, err := st.HeadAccount(ctx); err != nil || ai.QuotaBytes != -1 {
		t.Errorf("HeadAccount with quota \"lots\": %+v, %v; want no quota", ai, err)
	}
	set("X-Account-Object-Count", "5", "X-Account-Container-Count", "2")
	if _, err := st.HeadAccount(ctx); !errors.Is(err, ErrBadAnswer) {
		t.Errorf("HeadAccount without X-Account-Bytes-Used: %v, want ErrBadAnswer", err)
	}

	set("X-Container-Bytes-Used", "77", "X-Container-Object-Count", "3", "X-Container-Meta-Quota-Bytes", " 500 ")
	ci, err := st.HeadContainer(ctx, "c")
	if want := (ContainerInfo{BytesUsed: 77, Objects: 3, QuotaBytes: 500}); err != nil || ci != want {
		t.Errorf("HeadContainer: %+v, %v; want %+v", ci, err, want)
	}
	set("X-Container-Bytes-Used", "-1", "X-Container-Object-Count", "3")
	if _, err := st.HeadContainer(ctx, "c"); !errors.Is(err, ErrBadAnswer) {
		t.Errorf("HeadContainer with bytes used -1: %v, want ErrBadAnswer", err)
	}
}

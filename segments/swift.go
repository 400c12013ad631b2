package segments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ncw/swift/v2"
	"golang.org/x/sync/errgroup"
)

// SwiftOptions configure the Swift adapter.
type SwiftOptions struct {
	// Auth hands out the token and storage URL (the auth package's keeper).
	Auth swift.Authenticator
	// Transport carries the requests; nil means a default transport. The
	// keeper may wrap it to stamp X-Service-Token.
	Transport http.RoundTripper
	// ConnectTimeout bounds the wait for response headers; Timeout is the
	// idle timeout of a body in either direction.
	ConnectTimeout, Timeout time.Duration
	UserAgent               string
}

// SwiftStore is the ObjectStore of a real Swift cluster (ncw/swift/v2).
// It uses only ncw/swift's plain calls: large objects are built by this
// package, and retries are Retrying's job.
type SwiftStore struct {
	c      *swift.Connection
	noBulk atomic.Bool // bulk delete was refused; delete one by one
	// pageSize is the listing page size, once Limits read the cluster's
	// container_listing_limit (a larger limit is refused with 412); 0:
	// listPageSize.
	pageSize atomic.Int64
}

var _ ObjectStore = (*SwiftStore)(nil)

// NewSwiftStore returns an ObjectStore speaking to Swift through o.Auth.
func NewSwiftStore(o SwiftOptions) *SwiftStore {
	c := &swift.Connection{
		Auth:           o.Auth,
		Transport:      o.Transport,
		ConnectTimeout: o.ConnectTimeout,
		Timeout:        o.Timeout,
		UserAgent:      o.UserAgent,
		// One retry, which ncw/swift spends on re-authenticating after a
		// 401 (or on a failed GET/HEAD). Everything else is Retrying's.
		Retries: 1,
	}
	if c.Transport == nil {
		c.Transport = DefaultTransport()
	}
	if c.UserAgent == "" {
		c.UserAgent = "imagefs"
	}
	return &SwiftStore{c: c}
}

// DefaultTransport is an HTTP transport with the timeouts a daemon needs
// and enough idle connections for parallel segment traffic.
func DefaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = 0 // ncw/swift's ConnectTimeout covers it
	t.ExpectContinueTimeout = 5 * time.Second
	return t
}

// Authenticate makes sure a token and storage URL are available, so a
// configuration error shows up before anything is mounted.
func (s *SwiftStore) Authenticate(ctx context.Context) error {
	if err := s.c.Authenticate(ctx); err != nil {
		return convertErr("AUTH", "", err)
	}
	return nil
}

func objPath(container, object string) string {
	if object == "" {
		return container
	}
	return container + "/" + object
}

// convertErr turns ncw/swift and net/http errors into this package's.
func convertErr(op, obj string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var se *swift.Error
	if errors.As(err, &se) {
		if se == swift.TimeoutError {
			return &TransportError{Err: fmt.Errorf("%s %s: %w", op, obj, errTimeout)}
		}
		if se.StatusCode == 0 {
			return fmt.Errorf("%s %s: %w", op, obj, err)
		}
		return &StatusError{Op: op, Object: obj, Code: se.StatusCode, Body: trimBody(err.Error())}
	}
	if p := malformedHTTP(err); p != "" {
		return &BadAnswerError{Op: op, Object: obj, Problem: p}
	}
	return &TransportError{Err: fmt.Errorf("%s %s: %w", op, obj, err)}
}

// malformedHTTP recognises the answers net/http itself refuses to parse
// because of their Content-Length (negative, not a number, several
// different ones), and says what was wrong; "" for any other error.
// net/http has no type for these errors, only their text.
func malformedHTTP(err error) string {
	msg := err.Error()
	for _, sig := range []string{"bad Content-Length", "invalid empty Content-Length", "multiple Content-Length"} {
		if i := strings.Index(msg, sig); i >= 0 {
			return "the answer's Content-Length header is malformed: " + clipRaw(msg[i:])
		}
	}
	return ""
}

// clipRaw cuts s to a length a log line can carry.
func clipRaw(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

var errTimeout = errors.New("timeout waiting for Swift")

func trimBody(s string) string {
	if i := strings.Index(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// call issues one request and converts its error. On success the caller owns
// resp.Body (unless NoResponse).
func (s *SwiftStore) call(ctx context.Context, op, container, object string, p swift.RequestOpts) (*http.Response, swift.Headers, error) {
	p.Operation = op
	p.Container = container
	p.ObjectName = object
	su, err := s.c.GetStorageUrl(ctx)
	if err != nil {
		return nil, nil, convertErr("AUTH", "", err)
	}
	// OnReAuth runs with the connection's lock held: read the field.
	p.OnReAuth = func() (string, error) { return s.c.StorageUrl, nil }
	resp, h, err := s.c.Call(ctx, su, p)
	if err != nil {
		err = convertErr(op, objPath(container, object), err)
		// Only the StatusError convertErr made for this answer: one found
		// deeper is a context's cause, another call's error (errgroup).
		if st, ok := err.(*StatusError); ok {
			st.RetryAfter = parseRetryAfter(h["Retry-After"])
		}
		return nil, h, err
	}
	return resp, h, nil
}

// maxRetryAfter caps the pause a Retry-After header may ask for: a server
// asking for an hour (or for year 9999) gets a minute, and the retry
// budget decides whether even that fits.
const maxRetryAfter = time.Minute

func parseRetryAfter(v string) time.Duration { return parseRetryAfterAt(v, time.Now()) }

// parseRetryAfterAt reads a Retry-After value, seconds or an HTTP date,
// as a pause in [0, maxRetryAfter] from now; 0 if it is neither.
func parseRetryAfterAt(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter // more seconds than an int64 holds, or just many
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

func (o PutOptions) headers(h swift.Headers) swift.Headers {
	if o.ContentType != "" {
		h["Content-Type"] = o.ContentType
	}
	for k, v := range o.Meta {
		h["X-Object-Meta-"+k] = v
	}
	if o.DLO != "" {
		h["X-Object-Manifest"] = o.DLO
	}
	return h
}

// Put implements ObjectStore.
func (s *SwiftStore) Put(ctx context.Context, container, object string, body io.ReadSeeker, size int64, md5 string, o PutOptions) (string, error) {
	h := o.headers(swift.Headers{"Content-Length": strconv.FormatInt(size, 10)})
	if md5 != "" {
		h["Etag"] = md5
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	_, rh, err := s.call(ctx, "PUT", container, object, swift.RequestOpts{Headers: h, Body: body, NoResponse: true})
	if err != nil {
		return "", err
	}
	etag := strings.Trim(rh["Etag"], `"`)
	if md5 != "" && etag != md5 {
		return "", fmt.Errorf("PUT %s: Swift stored ETag %q, sent %q", objPath(container, object), etag, md5)
	}
	return etag, nil
}

// Get implements ObjectStore.
func (s *SwiftStore) Get(ctx context.Context, container, object string, off, n int64, ifMatch string) (io.ReadCloser, error) {
	h := swift.Headers{}
	ranged := off > 0 || n >= 0
	if ranged {
		if n == 0 {
			return io.NopCloser(strings.NewReader("")), nil
		}
		if n < 0 {
			h["Range"] = fmt.Sprintf("bytes=%d-", off)
		} else {
			h["Range"] = fmt.Sprintf("bytes=%d-%d", off, off+n-1)
		}
	}
	if ifMatch != "" {
		h["If-Match"] = ifMatch
	}
	resp, _, err := s.call(ctx, "GET", container, object, swift.RequestOpts{Headers: h})
	if err != nil {
		if errors.Is(err, ErrNotFound) && ifMatch != "" {
			// The version we pinned is gone: it was overwritten or deleted.
			return nil, fmt.Errorf("%w: %w", ErrStale, err)
		}
		return nil, err
	}
	if ranged && resp.StatusCode != http.StatusPartialContent {
		if resp.StatusCode == http.StatusOK && off == 0 {
			// Range covered the whole object; fine.
		} else {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: range %q answered with %d, not 206", objPath(container, object), h["Range"], resp.StatusCode)
		}
	}
	want := resp.ContentLength
	return &lengthReader{rc: resp.Body, left: want, known: want >= 0, name: objPath(container, object), meta: objectMeta(resp.Header)}, nil
}

// lengthReader turns a body that ends early into errShortBody instead of a
// silent EOF.
type lengthReader struct {
	rc    io.ReadCloser
	left  int64
	known bool
	name  string
	meta  map[string]string
}

func (r *lengthReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.left -= int64(n)
	if err == io.EOF && r.known && r.left > 0 {
		return n, &TransportError{Err: fmt.Errorf("GET %s: %w (%d bytes missing)", r.name, errShortBody, r.left)}
	}
	if err != nil && err != io.EOF {
		err = convertErr("GET", r.name, err)
	}
	return n, err
}

func (r *lengthReader) Close() error { return r.rc.Close() }

// Meta returns the object's X-Object-Meta-* headers sent with the body
// (keys in lower case without the prefix): block digests among them.
func (r *lengthReader) Meta() map[string]string { return r.meta }

// objectMeta collects the X-Object-Meta-* headers of an answer.
func objectMeta(h http.Header) map[string]string {
	m := map[string]string{}
	for k, v := range h {
		if name, ok := strings.CutPrefix(strings.ToLower(k), "x-object-meta-"); ok && len(v) > 0 {
			m[name] = v[0]
		}
	}
	return m
}

// Head implements ObjectStore.
func (s *SwiftStore) Head(ctx context.Context, container, object string) (Info, error) {
	resp, h, err := s.call(ctx, "HEAD", container, object, swift.RequestOpts{NoResponse: true})
	if err != nil {
		return Info{}, err
	}
	_ = resp
	in, err := headInfo(container, object, h)
	if err != nil {
		return Info{}, &BadAnswerError{Op: "HEAD", Object: objPath(container, object), Problem: err.Error()}
	}
	return in, nil
}

// headInfo is the Info of an object from the headers of its HEAD. A size
// that is missing, not a number or negative, and an X-Object-Manifest that
// is not container/prefix, are errors: the object cannot be used.
func headInfo(container, object string, h swift.Headers) (Info, error) {
	in := Info{Container: container, Name: object, Meta: map[string]string{}}
	cl, ok := h["Content-Length"]
	if !ok {
		return Info{}, errors.New("no Content-Length header")
	}
	n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
	if err != nil || n < 0 {
		return Info{}, fmt.Errorf("Content-Length %s is not a size", clip(cl))
	}
	in.Size = n
	in.ETag = strings.Trim(h["Etag"], `"`)
	in.ContentType = h["Content-Type"]
	if t, err := http.ParseTime(h["Last-Modified"]); err == nil {
		in.LastModified = t
	}
	for k, v := range h {
		lk := strings.ToLower(k)
		if m, ok := strings.CutPrefix(lk, "x-object-meta-"); ok {
			in.Meta[m] = v
		}
	}
	in.SLO = strings.EqualFold(h["X-Static-Large-Object"], "true")
	if v, ok := h["X-Object-Manifest"]; ok {
		if _, _, err := parseDLOManifest(v); err != nil {
			return Info{}, err
		}
		in.DLO = v
	}
	return in, nil
}

type sloPutEntry struct {
	Path      string `json:"path"`
	Etag      any    `json:"etag"`
	SizeBytes any    `json:"size_bytes"`
	Range     string `json:"range,omitempty"`
}

// PutManifest implements ObjectStore.
func (s *SwiftStore) PutManifest(ctx context.Context, container, object string, entries []ManifestEntry, o PutOptions) (string, error) {
	list := make([]sloPutEntry, len(entries))
	for i, e := range entries {
		list[i] = sloPutEntry{Path: "/" + e.Container + "/" + e.Object}
		if e.ETag != "" {
			list[i].Etag = e.ETag
		}
		if e.Size > 0 {
			list[i].SizeBytes = e.Size
		}
		if e.Length > 0 {
			list[i].Range = fmt.Sprintf("%d-%d", e.Offset, e.Offset+e.Length-1)
		}
	}
	body, err := json.Marshal(list)
	if err != nil {
		return "", err
	}
	h := o.headers(swift.Headers{"Content-Length": strconv.Itoa(len(body))})
	if h["Content-Type"] == "" {
		h["Content-Type"] = "application/octet-stream"
	}
	_, rh, err := s.call(ctx, "PUT", container, object, swift.RequestOpts{
		Headers:    h,
		Body:       strings.NewReader(string(body)),
		Parameters: url.Values{"multipart-manifest": {"put"}},
		NoResponse: true,
	})
	if err != nil {
		return "", err
	}
	return strings.Trim(rh["Etag"], `"`), nil
}

type sloGetEntry struct {
	Name   string `json:"name"`
	Hash   string `json:"hash"`
	Bytes  int64  `json:"bytes"`
	Range  string `json:"range"`
	SubSLO bool   `json:"sub_slo"`
}

// Bounds on what one manifest GET may bring: Swift stores manifests of at
// most max_manifest_segments entries (1000 by default), and parseLimits
// refuses a limit above maxManifestEntries.
const (
	maxManifestBody    = 64 << 20
	maxManifestEntries = 100_000
)

// GetManifest implements ObjectStore.
func (s *SwiftStore) GetManifest(ctx context.Context, container, object string) ([]ManifestEntry, error) {
	resp, _, err := s.call(ctx, "GET", container, object, swift.RequestOpts{
		Parameters: url.Values{"multipart-manifest": {"get"}},
	})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	name := objPath(container, object)
	body := &boundedBody{r: resp.Body, left: maxManifestBody + 1}
	raw, err := decodeManifest(body)
	if err == nil {
		var es []ManifestEntry
		if es, err = parseManifestEntries(raw); err == nil {
			return es, nil
		}
	}
	return nil, body.failure("GET-MANIFEST", name, maxManifestBody, err)
}

// decodeManifest decodes the JSON array of a multipart-manifest=get
// answer, one entry at a time: at most maxManifestEntries of them.
func decodeManifest(r io.Reader) ([]sloGetEntry, error) {
	var raw []sloGetEntry
	err := decodeArray(r, func(e sloGetEntry) error {
		if len(raw) == maxManifestEntries {
			return fmt.Errorf("the manifest has more than %d entries", maxManifestEntries)
		}
		raw = append(raw, e)
		return nil
	})
	return raw, err
}

// parseManifestEntries checks and converts the entries of an SLO
// manifest: each names /container/object, has a size that is not negative
// and, if it has a range, one inside the segment; the entries together
// hold no more than an int64 of bytes.
func parseManifestEntries(raw []sloGetEntry) ([]ManifestEntry, error) {
	out := make([]ManifestEntry, 0, len(raw))
	var total int64
	for _, r := range raw {
		rest, slash := strings.CutPrefix(r.Name, "/")
		c, o, ok := strings.Cut(rest, "/")
		if !slash || !ok || c == "" || o == "" || !validName(r.Name) {
			return nil, fmt.Errorf("manifest entry %s: not /container/object", clip(r.Name))
		}
		if r.Bytes < 0 {
			return nil, fmt.Errorf("manifest entry %s: negative size %d", clip(r.Name), r.Bytes)
		}
		e := ManifestEntry{Container: c, Object: o, ETag: r.Hash, Size: r.Bytes, SubSLO: r.SubSLO}
		if r.Range != "" {
			a, b, ok := strings.Cut(r.Range, "-")
			first, err1 := strconv.ParseInt(a, 10, 64)
			last, err2 := strconv.ParseInt(b, 10, 64)
			// last-first+1 must fit too: first 0, last MaxInt64 does not.
			if !ok || err1 != nil || err2 != nil || first < 0 || last < first || last-first == math.MaxInt64 {
				return nil, fmt.Errorf("manifest entry %s: bad range %s", clip(r.Name), clip(r.Range))
			}
			if last >= r.Bytes {
				return nil, fmt.Errorf("manifest entry %s: range %s beyond the segment's %d bytes", clip(r.Name), clip(r.Range), r.Bytes)
			}
			e.Offset, e.Length = first, last-first+1
		}
		if total > math.MaxInt64-e.Bytes() {
			return nil, errors.New("the manifest's entries add up to more bytes than a file can have")
		}
		total += e.Bytes()
		out = append(out, e)
	}
	return out, nil
}

// boundedBody reads at most left-1 bytes of an answer body (a read beyond
// fails) and remembers the first read error, so that a caller can tell a
// body cut by the network (retried) from one that is too large or does not
// parse (a bad answer).
type boundedBody struct {
	r    io.Reader
	left int64 // bytes that may still be read, one more than allowed
	err  error // the first read error other than EOF
}

var errBodyTooLarge = errors.New("answer body too large")

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// failure turns the error of parsing the body into the caller's: the
// network's error if reading failed, else a bad answer saying what was
// wrong (more than max bytes, or err).
func (b *boundedBody) failure(op, name string, max int64, err error) error {
	switch {
	case b.err != nil:
		return convertErr(op, name, b.err)
	case b.left <= 0:
		return &BadAnswerError{Op: op, Object: name, Problem: fmt.Sprintf("the answer is larger than %d bytes", max)}
	}
	return &BadAnswerError{Op: op, Object: name, Problem: err.Error()}
}

// decodeArray decodes a JSON array from r, calling add for each element
// as soon as it is decoded (add's error stops it), so that a bound in add
// holds before the whole array is in memory. Only white space may follow
// the array.
func decodeArray[T any](r io.Reader, add func(T) error) error {
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil {
		return jsonErr(err)
	} else if d, ok := t.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("not a JSON array but %s", clip(fmt.Sprint(t)))
	}
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			return jsonErr(err)
		}
		if err := add(v); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return jsonErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("something follows the JSON array")
	}
	return nil
}

// jsonErr says what is wrong with a JSON answer.
func jsonErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the JSON answer ends early")
	}
	return fmt.Errorf("not valid JSON: %w", err)
}

// Copy implements ObjectStore with a COPY request; multipart-manifest=get
// makes Swift copy a manifest rather than the large object's content.
func (s *SwiftStore) Copy(ctx context.Context, container, src, dst string) error {
	_, _, err := s.call(ctx, "COPY", container, src, swift.RequestOpts{
		NoResponse: true,
		Parameters: url.Values{"multipart-manifest": {"get"}},
		Headers:    swift.Headers{"Destination": url.PathEscape(container) + "/" + escapePath(dst)},
	})
	return err
}

// escapePath escapes an object name for a header, keeping its slashes.
func escapePath(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// Delete implements ObjectStore.
func (s *SwiftStore) Delete(ctx context.Context, container, object string) error {
	_, _, err := s.call(ctx, "DELETE", container, object, swift.RequestOpts{NoResponse: true})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// DeleteMany implements ObjectStore, with bulk delete in batches of 1000.
// Where bulk delete is refused it deletes one object at a time (a few in
// parallel): Swift's bulk middleware makes its sub-requests without the
// X-Service-Token, so on a service-token account (IMAGE_) every one of
// them is denied; a cluster may also lack the middleware.
func (s *SwiftStore) DeleteMany(ctx context.Context, container string, objects []string) error {
	const batch = 1000
	for len(objects) > 0 && !s.noBulk.Load() {
		n := min(batch, len(objects))
		res, err := s.c.BulkDelete(ctx, container, objects[:n])
		if err == nil {
			for _, e := range res.Errors {
				if e != nil && !errors.Is(e, swift.ObjectNotFound) {
					err = e
					break
				}
			}
		}
		if err != nil {
			err = convertErr("BULK-DELETE", container, err)
			if ok, _ := retryable(err); ok {
				return err
			}
			s.noBulk.Store(true) // refused: one by one from now on
			break
		}
		objects = objects[n:]
	}
	return s.deleteEach(ctx, container, objects)
}

// deleteEach deletes objects one request each, 8 at a time.
func (s *SwiftStore) deleteEach(ctx context.Context, container string, objects []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, o := range objects {
		g.Go(func() error { return s.Delete(gctx, container, o) })
	}
	return g.Wait()
}

// Bounds on listings: a page of at most 10,000 names of at most 1024
// bytes, with their hash, type and time, is under maxListPage;
// maxListEntries stops a server that sends pages for ever (a variable,
// for the tests). The first page is smaller: most listings stop at their
// first name (does a directory exist?) or are small, and a large one
// starts streaming sooner.
const (
	listPageSize  = 10000 // Swift's container_listing_limit default, its maximum
	listFirstPage = 1000
	maxListPage   = 16 << 20
)

var maxListEntries = 10_000_000

// List implements ObjectStore. It asks for pages of listPageSize names
// (the first of listFirstPage) after the last name of the previous page (Swift may answer short pages)
// until a page is empty. A page that does not go past the marker (a server
// that repeats itself) and more than maxListEntries names in all are bad
// answers, so a broken listing fails instead of running for ever.
func (s *SwiftStore) List(ctx context.Context, container, prefix string, delimiter rune, fn func(Info) error) error {
	var marker string
	total := 0
	for {
		asked := time.Now()
		page, err := s.listPage(ctx, container, prefix, delimiter, marker, marker == "")
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		last := page[len(page)-1].Name
		total += len(page)
		switch {
		case last <= marker:
			return &BadAnswerError{Op: "LIST", Object: container, Problem: fmt.Sprintf(
				"the listing does not advance: the page after %s ends at %s", clip(marker), clip(last))}
		case total > maxListEntries:
			return &BadAnswerError{Op: "LIST", Object: container, Problem: fmt.Sprintf(
				"the listing goes on past %d names", maxListEntries)}
		}
		for _, in := range page {
			in.ListedAt = asked
			if err := fn(in); err != nil {
				return err
			}
		}
		marker = last
	}
}

// listPage GETs one page of a container listing.
func (s *SwiftStore) listPage(ctx context.Context, container, prefix string, delimiter rune, marker string, first bool) ([]Info, error) {
	limit := int64(listPageSize)
	if n := s.pageSize.Load(); n > 0 {
		limit = n
	}
	if first {
		limit = min(limit, listFirstPage)
	}
	q := url.Values{"format": {"json"}, "limit": {strconv.FormatInt(limit, 10)}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if delimiter != 0 {
		q.Set("delimiter", string(delimiter))
	}
	if marker != "" {
		q.Set("marker", marker)
	}
	resp, _, err := s.call(ctx, "GET", container, "", swift.RequestOpts{Parameters: q})
	if err != nil {
		return nil, convertListErr(err)
	}
	defer resp.Body.Close()
	body := &boundedBody{r: resp.Body, left: maxListPage + 1}
	page, err := parseListing(body, container, prefix)
	if err != nil {
		return nil, body.failure("LIST", container, maxListPage, err)
	}
	return page, nil
}

// convertListErr names the operation of a failed listing request LIST,
// as the logs always did.
func convertListErr(err error) error {
	var se *StatusError
	if errors.As(err, &se) {
		se.Op = "LIST"
	}
	return err
}

// listEntry is one entry of a JSON container listing: an object, or a
// pseudo-directory (subdir) of a delimited one.
type listEntry struct {
	Name         string `json:"name"`
	Subdir       string `json:"subdir"`
	Bytes        int64  `json:"bytes"`
	Hash         string `json:"hash"`
	ContentType  string `json:"content_type"`
	LastModified string `json:"last_modified"`
	SLOEtag      string `json:"slo_etag"` // an SLO's, quoted, as its HEAD's ETag
}

// parseListing decodes one page of a JSON container listing. Every entry
// must have a name that starts with prefix, a size that is not negative
// and, if any, a last_modified Swift's way ("2006-01-02T15:04:05.999999").
func parseListing(r io.Reader, container, prefix string) ([]Info, error) {
	var page []Info
	err := decodeArray(r, func(e listEntry) error {
		in := Info{Container: container, Name: e.Name, Size: e.Bytes, ETag: e.Hash, ContentType: e.ContentType,
			ListedSLOETag: strings.Trim(e.SLOEtag, `"`)}
		if total, ctype, ok := swiftBytes(e.ContentType); ok {
			in.Size, in.ContentType = total, ctype
		}
		if e.Subdir != "" {
			in = Info{Container: container, Name: e.Subdir, Subdir: true, ContentType: "application/directory"}
		}
		switch {
		case in.Name == "":
			return errors.New("a listing entry without a name")
		case !strings.HasPrefix(in.Name, prefix):
			return fmt.Errorf("listing entry %s is not under the prefix %s", clip(in.Name), clip(prefix))
		case in.Size < 0:
			return fmt.Errorf("listing entry %s: negative size %d", clip(in.Name), in.Size)
		}
		if e.LastModified != "" {
			// As ncw/swift: seconds are enough, with or without Z.
			ts, _, _ := strings.Cut(strings.TrimSuffix(e.LastModified, "Z"), ".")
			t, err := time.Parse(swift.TimeFormat, ts)
			if err != nil {
				return fmt.Errorf("listing entry %s: last_modified %s is not a time", clip(in.Name), clip(e.LastModified))
			}
			in.LastModified = t
		}
		page = append(page, in)
		return nil
	})
	return page, err
}

// swiftBytes reads the swift_bytes=N parameter of a listed content type:
// the slo middleware records an SLO's total size there, and the container
// server turns it into the entry's bytes before it answers; a listing that
// still has it (an older container server) lists the manifest's own size
// as bytes. It returns the total and the content type without the
// parameter.
func swiftBytes(ctype string) (int64, string, bool) {
	i := strings.LastIndex(ctype, ";swift_bytes=")
	if i < 0 {
		return 0, ctype, false
	}
	v := ctype[i+len(";swift_bytes="):]
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, ctype, false
	}
	return n, ctype[:i], true
}

// ListContainers implements ObjectStore: the account listing (GET on
// the storage URL) is paged like a container's, with the same checks.
func (s *SwiftStore) ListContainers(ctx context.Context, prefix string, fn func(name string) error) error {
	return s.List(ctx, "", prefix, 0, func(in Info) error { return fn(in.Name) })
}

// HeadContainer implements ObjectStore.
func (s *SwiftStore) HeadContainer(ctx context.Context, container string) (ContainerInfo, error) {
	_, h, err := s.call(ctx, "HEAD", container, "", swift.RequestOpts{NoResponse: true})
	if err != nil {
		return ContainerInfo{}, err
	}
	var p headerParser
	ci := ContainerInfo{
		BytesUsed:  p.count(h, "X-Container-Bytes-Used"),
		Objects:    p.count(h, "X-Container-Object-Count"),
		QuotaBytes: p.quota(h, "X-Container-Meta-Quota-Bytes"),
	}
	if p.err != nil {
		return ContainerInfo{}, &BadAnswerError{Op: "HEAD", Object: container, Problem: p.err.Error()}
	}
	return ci, nil
}

// HeadAccount implements ObjectStore.
func (s *SwiftStore) HeadAccount(ctx context.Context) (AccountInfo, error) {
	_, h, err := s.call(ctx, "HEAD", "", "", swift.RequestOpts{NoResponse: true})
	if err != nil {
		return AccountInfo{}, err
	}
	var p headerParser
	ai := AccountInfo{
		BytesUsed:  p.count(h, "X-Account-Bytes-Used"),
		Objects:    p.count(h, "X-Account-Object-Count"),
		Containers: p.count(h, "X-Account-Container-Count"),
		QuotaBytes: p.quota(h, "X-Account-Meta-Quota-Bytes"),
	}
	if p.err != nil {
		return AccountInfo{}, &BadAnswerError{Op: "HEAD", Object: "the account", Problem: p.err.Error()}
	}
	return ai, nil
}

// headerParser reads the numbers of an account's or container's HEAD,
// keeping the first problem.
type headerParser struct{ err error }

// count is a header that Swift always sends, a number >= 0.
func (p *headerParser) count(h swift.Headers, name string) int64 {
	v, ok := h[name]
	if !ok {
		p.fail(fmt.Errorf("no %s header", name))
		return 0
	}
	return p.number(name, v)
}

// quota is a quota in metadata: -1 if absent or empty. Swift's quota
// middlewares ignore a value that is not a number; so does this.
func (p *headerParser) quota(h swift.Headers, name string) int64 {
	v := strings.TrimSpace(h[name])
	n, err := strconv.ParseInt(v, 10, 64)
	if v == "" || err != nil || n < 0 {
		return -1
	}
	return n
}

func (p *headerParser) number(name, v string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		p.fail(fmt.Errorf("%s %s is not a count", name, clip(v)))
		return 0
	}
	return n
}

func (p *headerParser) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

// CreateContainer implements ObjectStore.
func (s *SwiftStore) CreateContainer(ctx context.Context, container string) error {
	_, _, err := s.call(ctx, "PUT", container, "", swift.RequestOpts{NoResponse: true,
		Headers: swift.Headers{"Content-Length": "0"}})
	return err
}

// maxInfoBody bounds the /info answer (Swift's is a few KiB).
const maxInfoBody = 1 << 20

// Limits implements ObjectStore. It reads /info, next to the account's
// /v1 (no token needed), like ncw/swift's QueryInfo but with a bounded body.
func (s *SwiftStore) Limits(ctx context.Context) (Limits, error) {
	su, err := s.c.GetStorageUrl(ctx)
	if err != nil {
		return Limits{}, convertErr("AUTH", "", err)
	}
	u, err := url.Parse(su)
	if err != nil {
		return Limits{}, fmt.Errorf("storage URL %q: %w", su, err)
	}
	u.Path, u.RawPath, u.RawQuery = path.Join(u.Path, "..", "..", "info"), "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Limits{}, err
	}
	req.Header.Set("User-Agent", s.c.UserAgent)
	resp, err := (&http.Client{Transport: s.c.Transport}).Do(req)
	if err != nil {
		return Limits{}, convertErr("GET", "/info", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Limits{}, &StatusError{Op: "GET", Object: "/info", Code: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	}
	body := &boundedBody{r: resp.Body, left: maxInfoBody + 1}
	b, err := io.ReadAll(body)
	if err == nil {
		var l Limits
		if l, err = parseInfo(b); err == nil {
			s.pageSize.Store(int64(min(listPageSize, l.ListingLimit)))
			return l, nil
		}
	}
	return Limits{}, body.failure("GET", "/info", maxInfoBody, err)
}

// parseInfo reads the limits from the body of /info.
func parseInfo(b []byte) (Limits, error) {
	var info map[string]any
	if err := json.Unmarshal(b, &info); err != nil {
		return Limits{}, jsonErr(err)
	}
	return parseLimits(info), nil
}

// The ranges parseLimits accepts. Below two entries per manifest, nesting
// manifests never ends; the upper bounds are far above any real cluster's
// and keep the numbers clear of overflow.
const (
	maxSaneManifestSize = 1 << 30
	maxSaneFileSize     = 1 << 60
)

// parseLimits reads the limits from /info. A limit that is absent is
// Swift's default; one that is not a whole number in its sane range is
// Swift's default too, and named in Problems, for the caller to log.
func parseLimits(info map[string]any) Limits {
	l := DefaultLimits
	section := func(name string) map[string]any {
		v, ok := info[name]
		if !ok {
			return nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			l.Problems = append(l.Problems, fmt.Sprintf("%s is %s, not an object", name, jsonClip(v)))
		}
		return m
	}
	num := func(sec map[string]any, secName, key string, lo, hi, def int64) int64 {
		v, ok := sec[key]
		if !ok {
			return def
		}
		f, isNum := v.(float64)
		if !isNum || f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
			l.Problems = append(l.Problems, fmt.Sprintf("%s.%s is %s, not a whole number in [%d, %d]: using Swift's default %d",
				secName, key, jsonClip(v), lo, hi, def))
			return def
		}
		return int64(f)
	}
	sw := section("swift")
	l.MaxFileSize = num(sw, "swift", "max_file_size", 1, maxSaneFileSize, DefaultLimits.MaxFileSize)
	l.ListingLimit = int(num(sw, "swift", "container_listing_limit", 1, 1<<30, int64(DefaultLimits.ListingLimit)))
	_, l.SLO = info["slo"]
	slo := section("slo")
	l.MaxManifestSegments = int(num(slo, "slo", "max_manifest_segments", 2, maxManifestEntries, int64(DefaultLimits.MaxManifestSegments)))
	l.MaxManifestSize = num(slo, "slo", "max_manifest_size", 1, maxSaneManifestSize, DefaultLimits.MaxManifestSize)
	_, l.BulkDelete = info["bulk_delete"]
	return l
}

// jsonClip shows a JSON value for a message, cut short.
func jsonClip(v any) string {
	b, _ := json.Marshal(v)
	return clipRaw(string(b))
}

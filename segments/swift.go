package segments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
	return &TransportError{Err: fmt.Errorf("%s %s: %w", op, obj, err)}
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
		var st *StatusError
		if errors.As(err, &st) {
			st.RetryAfter = parseRetryAfter(h["Retry-After"])
		}
		return nil, h, err
	}
	return resp, h, nil
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
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
	in := Info{Container: container, Name: object, Meta: map[string]string{}}
	in.Size, _ = strconv.ParseInt(h["Content-Length"], 10, 64)
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
	in.DLO = h["X-Object-Manifest"]
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

// GetManifest implements ObjectStore.
func (s *SwiftStore) GetManifest(ctx context.Context, container, object string) ([]ManifestEntry, error) {
	resp, _, err := s.call(ctx, "GET", container, object, swift.RequestOpts{
		Parameters: url.Values{"multipart-manifest": {"get"}},
	})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var raw []sloGetEntry
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&raw); err != nil {
		return nil, fmt.Errorf("GET %s manifest: %w", objPath(container, object), err)
	}
	return parseManifestEntries(raw)
}

func parseManifestEntries(raw []sloGetEntry) ([]ManifestEntry, error) {
	out := make([]ManifestEntry, 0, len(raw))
	for _, r := range raw {
		c, o, ok := strings.Cut(strings.TrimPrefix(r.Name, "/"), "/")
		if !ok {
			return nil, fmt.Errorf("manifest entry %q: not /container/object", r.Name)
		}
		e := ManifestEntry{Container: c, Object: o, ETag: r.Hash, Size: r.Bytes, SubSLO: r.SubSLO}
		if r.Range != "" {
			a, b, ok := strings.Cut(r.Range, "-")
			first, err1 := strconv.ParseInt(a, 10, 64)
			last, err2 := strconv.ParseInt(b, 10, 64)
			if !ok || err1 != nil || err2 != nil || last < first {
				return nil, fmt.Errorf("manifest entry %q: bad range %q", r.Name, r.Range)
			}
			e.Offset, e.Length = first, last-first+1
		}
		out = append(out, e)
	}
	return out, nil
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

// List implements ObjectStore.
func (s *SwiftStore) List(ctx context.Context, container, prefix string, delimiter rune, fn func(Info) error) error {
	opts := &swift.ObjectsOpts{Prefix: prefix, Delimiter: delimiter, Limit: 1000}
	for {
		objs, err := s.c.Objects(ctx, container, opts)
		if err != nil {
			return convertErr("LIST", container, err)
		}
		for _, o := range objs {
			in := Info{Container: container, Name: o.Name, Size: o.Bytes, ETag: o.Hash,
				ContentType: o.ContentType, LastModified: o.LastModified, Subdir: o.PseudoDirectory}
			if err := fn(in); err != nil {
				return err
			}
		}
		if len(objs) == 0 {
			return nil
		}
		// Swift may return short pages; only an empty page ends the listing.
		opts.Marker = objs[len(objs)-1].Name
	}
}

// HeadContainer implements ObjectStore.
func (s *SwiftStore) HeadContainer(ctx context.Context, container string) error {
	_, _, err := s.call(ctx, "HEAD", container, "", swift.RequestOpts{NoResponse: true})
	return err
}

// CreateContainer implements ObjectStore.
func (s *SwiftStore) CreateContainer(ctx context.Context, container string) error {
	_, _, err := s.call(ctx, "PUT", container, "", swift.RequestOpts{NoResponse: true,
		Headers: swift.Headers{"Content-Length": "0"}})
	return err
}

// Limits implements ObjectStore.
func (s *SwiftStore) Limits(ctx context.Context) (Limits, error) {
	info, err := s.c.QueryInfo(ctx)
	if err != nil {
		return Limits{}, convertErr("GET", "/info", err)
	}
	return parseLimits(info), nil
}

func parseLimits(info map[string]any) Limits {
	l := DefaultLimits
	num := func(m any, key string) (float64, bool) {
		mm, ok := m.(map[string]any)
		if !ok {
			return 0, false
		}
		v, ok := mm[key].(float64)
		return v, ok
	}
	if v, ok := num(info["swift"], "max_file_size"); ok {
		l.MaxFileSize = int64(v)
	}
	slo, ok := info["slo"]
	l.SLO = ok
	if v, ok := num(slo, "max_manifest_segments"); ok {
		l.MaxManifestSegments = int(v)
	}
	if v, ok := num(slo, "max_manifest_size"); ok {
		l.MaxManifestSize = int64(v)
	}
	_, l.BulkDelete = info["bulk_delete"]
	return l
}

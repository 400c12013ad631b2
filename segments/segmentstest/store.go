// Package segmentstest provides an in-memory segments.ObjectStore with
// fault injection and call counters, for fast unit tests. Real Swift is the
// reference: RunStoreTests runs the same contract against both.
package segmentstest

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/imagefs/imagefs/segments"
)

type object struct {
	data     []byte
	etag     string
	ctype    string
	meta     map[string]string
	modified time.Time
	slo      []segments.ManifestEntry // set for an SLO manifest
	dlo      string
	// listETag is the hash a listing shows for an SLO: Swift lists the
	// MD5 of the manifest it stores, not the large object's ETag.
	listETag string
}

// Store is an in-memory ObjectStore. The zero value is not usable: call New.
type Store struct {
	mu         sync.Mutex
	containers map[string]map[string]*object
	calls      map[string]int
	hook       func(op, container, object string) error
	after      func(op, container, object string) error
	limits     segments.Limits
	quotas     map[string]int64 // container (or "" for the account) -> quota bytes
}

var _ segments.ObjectStore = (*Store)(nil)

// New returns an empty store with Swift's default limits.
func New() *Store {
	return &Store{containers: map[string]map[string]*object{}, calls: map[string]int{}, quotas: map[string]int64{}, limits: segments.DefaultLimits}
}

// SetLimits changes what Limits reports and what PutManifest enforces.
func (s *Store) SetLimits(l segments.Limits) { s.mu.Lock(); s.limits = l; s.mu.Unlock() }

// SetHook installs a function that runs before every operation (op is
// "PUT", "GET", "HEAD", "PUT-MANIFEST", "GET-MANIFEST", "DELETE", "LIST",
// ...). A non-nil error fails the operation without side effects. nil
// removes the hook.
func (s *Store) SetHook(h func(op, container, object string) error) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

// SetAfterHook installs a function that runs after a PUT or PUT-MANIFEST
// took effect: a non-nil error becomes the operation's answer although
// the object is stored (a lost answer). nil removes it.
func (s *Store) SetAfterHook(h func(op, container, object string) error) {
	s.mu.Lock()
	s.after = h
	s.mu.Unlock()
}

func (s *Store) leave(op, container, obj string) error {
	s.mu.Lock()
	h := s.after
	s.mu.Unlock()
	if h != nil {
		return h(op, container, obj)
	}
	return nil
}

// Calls returns how many times op was called.
func (s *Store) Calls(op string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls[op] }

// Names returns the object names of a container, sorted.
func (s *Store) Names(container string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.containers[container] {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// enter counts the operation and runs the hook. A hook that blocks is a
// slow server: the caller's ctx ends the wait, as it ends a real request
// (the hook itself goes on in the background).
func (s *Store) enter(ctx context.Context, op, container, obj string) error {
	s.mu.Lock()
	s.calls[op]++
	h := s.hook
	s.mu.Unlock()
	if h == nil {
		return ctx.Err()
	}
	done := make(chan error, 1)
	go func() { done <- h(op, container, obj) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func notFound(op, c, o string) error {
	return &segments.StatusError{Op: op, Object: c + "/" + o, Code: 404}
}

func md5hex(b []byte) string { h := md5.Sum(b); return hex.EncodeToString(h[:]) }

func (s *Store) container(c string) (map[string]*object, bool) {
	m, ok := s.containers[c]
	return m, ok
}

// CreateContainer implements ObjectStore.
func (s *Store) CreateContainer(ctx context.Context, c string) error {
	if err := s.enter(ctx, "PUT-CONTAINER", c, ""); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[c]; !ok {
		s.containers[c] = map[string]*object{}
	}
	return nil
}

// ListContainers implements ObjectStore (op "LIST-ACCOUNT" for the hooks).
func (s *Store) ListContainers(ctx context.Context, prefix string, fn func(name string) error) error {
	if err := s.enter(ctx, "LIST-ACCOUNT", "", prefix); err != nil {
		return err
	}
	s.mu.Lock()
	var names []string
	for n := range s.containers {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	s.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

// HeadContainer implements ObjectStore. Unlike Swift's, its figures are
// always up to date.
func (s *Store) HeadContainer(ctx context.Context, c string) (segments.ContainerInfo, error) {
	if err := s.enter(ctx, "HEAD-CONTAINER", c, ""); err != nil {
		return segments.ContainerInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.containers[c]
	if !ok {
		return segments.ContainerInfo{}, notFound("HEAD", c, "")
	}
	ci := segments.ContainerInfo{Objects: int64(len(m)), QuotaBytes: -1}
	for _, ob := range m {
		ci.BytesUsed += int64(len(ob.data))
	}
	if q, ok := s.quotas[c]; ok {
		ci.QuotaBytes = q
	}
	return ci, nil
}

// HeadAccount implements ObjectStore: the store is one account. Its
// figures are always up to date.
func (s *Store) HeadAccount(ctx context.Context) (segments.AccountInfo, error) {
	if err := s.enter(ctx, "HEAD-ACCOUNT", "", ""); err != nil {
		return segments.AccountInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ai := segments.AccountInfo{Containers: int64(len(s.containers)), QuotaBytes: -1}
	for _, m := range s.containers {
		ai.Objects += int64(len(m))
		for _, ob := range m {
			ai.BytesUsed += int64(len(ob.data))
		}
	}
	if q, ok := s.quotas[""]; ok {
		ai.QuotaBytes = q
	}
	return ai, nil
}

// SetQuota sets the quota (bytes) HeadContainer reports for container c,
// or with c == "" the one HeadAccount reports; n < 0 removes it. The fake
// does not enforce quotas.
func (s *Store) SetQuota(c string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n < 0 {
		delete(s.quotas, c)
		return
	}
	s.quotas[c] = n
}

// Put implements ObjectStore.
func (s *Store) Put(ctx context.Context, c, o string, body io.ReadSeeker, size int64, sum string, po segments.PutOptions) (string, error) {
	if err := s.enter(ctx, "PUT", c, o); err != nil {
		return "", err
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	data, err := io.ReadAll(io.LimitReader(body, size+1))
	if err != nil {
		return "", err
	}
	if int64(len(data)) != size {
		return "", &segments.StatusError{Op: "PUT", Object: c + "/" + o, Code: 400, Body: "body length mismatch"}
	}
	etag := md5hex(data)
	if sum != "" && sum != etag {
		return "", &segments.StatusError{Op: "PUT", Object: c + "/" + o, Code: 422}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.container(c)
	if !ok {
		return "", notFound("PUT", c, o)
	}
	m[o] = &object{data: data, etag: etag, ctype: guessType(o, po.ContentType), meta: putMeta(po.Meta), modified: time.Now(), dlo: po.DLO}
	s.mu.Unlock()
	defer s.mu.Lock()
	if err := s.leave("PUT", c, o); err != nil {
		return "", err
	}
	return etag, nil
}

func copyMeta(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// putMeta is the metadata Swift keeps of a PUT's X-Object-Meta-* headers:
// keys in lower case with "_" turned into "-" (the WSGI environment
// cannot tell them apart), values without surrounding white space.
func putMeta(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[strings.ReplaceAll(strings.ToLower(k), "_", "-")] = strings.TrimSpace(v)
	}
	return out
}

// guessType is the content type Swift gives a PUT: the one given, else
// one guessed from the name's extension, else application/octet-stream.
// Swift guesses with Python's mimetypes, which knows other extensions
// than Go's mime (and strips .gz and the like first); the common ones
// agree.
func guessType(name, given string) string {
	if given != "" {
		return given
	}
	if t, _, err := mime.ParseMediaType(mime.TypeByExtension(strings.ToLower(path.Ext(name)))); err == nil {
		return t
	}
	return "application/octet-stream"
}

// PutManifest implements ObjectStore, validating the entries as Swift does.
func (s *Store) PutManifest(ctx context.Context, c, o string, entries []segments.ManifestEntry, po segments.PutOptions) (string, error) {
	if err := s.enter(ctx, "PUT-MANIFEST", c, o); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(entries) > s.limits.MaxManifestSegments {
		return "", &segments.StatusError{Op: "PUT", Object: c + "/" + o, Code: 413, Body: "too many segments"}
	}
	m, ok := s.container(c)
	if !ok {
		return "", notFound("PUT", c, o)
	}
	var etags strings.Builder
	stored := make([]segments.ManifestEntry, len(entries))
	for i, e := range entries {
		seg, ok := s.containers[e.Container][e.Object]
		if !ok {
			return "", &segments.StatusError{Op: "PUT", Object: c + "/" + o, Code: 400, Body: "missing segment " + e.Object}
		}
		size := s.sizeOf(seg)
		if e.ETag != "" && e.ETag != seg.etag {
			return "", &segments.StatusError{Op: "PUT", Object: c + "/" + o, Code: 400, Body: "etag mismatch " + e.Object}
		}
		if e.Size > 0 && e.Size != size {
			return "", &segments.StatusError{Op: "PUT", Object: c + "/" + o, Code: 400, Body: "size mismatch " + e.Object}
		}
		if size == 0 && i < len(entries)-1 {
			return "", &segments.StatusError{Op: "PUT", Object: c + "/" + o, Code: 400, Body: "empty segment " + e.Object}
		}
		off, n := e.Offset, e.Length
		if n > 0 {
			// Swift: a range is HTTP's: one that runs past the segment's
			// end is cut there, one of the whole segment is dropped, one
			// that starts at or past the end is refused.
			if off >= size {
				return "", &segments.StatusError{Op: "PUT", Object: c + "/" + o, Code: 400, Body: "unsatisfiable range " + e.Object}
			}
			n = min(n, size-off)
			if off == 0 && n == size {
				n = 0
			}
		}
		stored[i] = segments.ManifestEntry{Container: e.Container, Object: e.Object, ETag: seg.etag, Size: size,
			Offset: off, Length: n, SubSLO: seg.slo != nil}
		etags.WriteString(seg.etag)
		if n > 0 {
			fmt.Fprintf(&etags, ":%d-%d;", off, off+n-1)
		}
	}
	etag := md5hex([]byte(etags.String()))
	m[o] = &object{etag: etag, ctype: "application/octet-stream", meta: putMeta(po.Meta), modified: time.Now(), slo: stored,
		listETag: md5hex(fmt.Appendf(nil, "%v", stored))}
	if po.ContentType != "" {
		m[o].ctype = po.ContentType
	}
	s.mu.Unlock()
	defer s.mu.Lock()
	if err := s.leave("PUT-MANIFEST", c, o); err != nil {
		return "", err
	}
	return etag, nil
}

// sizeOf is the size of an object's content. Called with s.mu held.
func (s *Store) sizeOf(ob *object) int64 {
	if ob.slo != nil {
		var n int64
		for _, e := range ob.slo {
			n += e.Bytes()
		}
		return n
	}
	if ob.dlo != "" {
		b, _ := s.content(ob, 0)
		return int64(len(b))
	}
	return int64(len(ob.data))
}

// content assembles an object's bytes. Called with s.mu held.
func (s *Store) content(ob *object, depth int) ([]byte, error) {
	if depth > 10 {
		return nil, fmt.Errorf("nested too deep")
	}
	switch {
	case ob.slo != nil:
		var buf bytes.Buffer
		for _, e := range ob.slo {
			seg, ok := s.containers[e.Container][e.Object]
			if !ok {
				return nil, fmt.Errorf("segment %s/%s missing", e.Container, e.Object)
			}
			b, err := s.content(seg, depth+1)
			if err != nil {
				return nil, err
			}
			if e.Length > 0 {
				b = b[e.Offset : e.Offset+e.Length]
			}
			buf.Write(b)
		}
		return buf.Bytes(), nil
	case ob.dlo != "":
		var buf bytes.Buffer
		for _, p := range s.dloParts(ob) {
			buf.Write(p.data)
		}
		return buf.Bytes(), nil
	}
	return ob.data, nil
}

// dloParts are the parts of a DLO, in name order. Called with s.mu held.
func (s *Store) dloParts(ob *object) []*object {
	v, _ := url.PathUnescape(ob.dlo)
	c, prefix, _ := strings.Cut(v, "/")
	var names []string
	for n := range s.containers[c] {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	parts := make([]*object, len(names))
	for i, n := range names {
		parts[i] = s.containers[c][n]
	}
	return parts
}

// Get implements ObjectStore.
func (s *Store) Get(ctx context.Context, c, o string, off, n int64, ifMatch string) (io.ReadCloser, error) {
	if err := s.enter(ctx, "GET", c, o); err != nil {
		return nil, err
	}
	if n == 0 {
		// As SwiftStore, which asks Swift nothing for no bytes.
		return &body{Reader: bytes.NewReader(nil), meta: map[string]string{}}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ob, ok := s.containers[c][o]
	if !ok {
		if ifMatch != "" {
			return nil, fmt.Errorf("%w: %w", segments.ErrStale, notFound("GET", c, o))
		}
		return nil, notFound("GET", c, o)
	}
	if ifMatch != "" && ifMatch != ob.etag {
		return nil, &segments.StatusError{Op: "GET", Object: c + "/" + o, Code: 412}
	}
	data, err := s.content(ob, 0)
	if err != nil {
		return nil, &segments.StatusError{Op: "GET", Object: c + "/" + o, Code: 409, Body: err.Error()}
	}
	ranged := off > 0 || n > 0 // as SwiftStore: a Range header
	if ranged && off >= int64(len(data)) {
		// Swift: even [0, n) of an empty object is unsatisfiable.
		return nil, &segments.StatusError{Op: "GET", Object: c + "/" + o, Code: 416}
	}
	end := int64(len(data))
	if n >= 0 && off+n < end {
		end = off + n
	}
	return &body{Reader: bytes.NewReader(bytes.Clone(data[off:end])), meta: copyMeta(ob.meta)}, nil
}

// body is a Get's answer: the bytes, and the object's metadata (as Swift
// sends X-Object-Meta-* with a GET).
type body struct {
	*bytes.Reader
	meta map[string]string
}

func (b *body) Close() error { return nil }

// Meta returns the object's metadata, keys in lower case without the
// X-Object-Meta- prefix.
func (b *body) Meta() map[string]string { return b.meta }

// Head implements ObjectStore.
func (s *Store) Head(ctx context.Context, c, o string) (segments.Info, error) {
	if err := s.enter(ctx, "HEAD", c, o); err != nil {
		return segments.Info{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ob, ok := s.containers[c][o]
	if !ok {
		return segments.Info{}, notFound("HEAD", c, o)
	}
	return s.info(c, o, ob, true), nil
}

// info is an object's Info as Head (full) or a listing shows it.
func (s *Store) info(c, o string, ob *object, full bool) segments.Info {
	in := segments.Info{Container: c, Name: o, Size: s.sizeOf(ob), ETag: ob.etag, ContentType: ob.ctype,
		LastModified: ob.modified}
	if in.ContentType == "" {
		in.ContentType = "application/octet-stream"
	}
	switch {
	case full:
		in.Meta = copyMeta(ob.meta)
		in.SLO = ob.slo != nil
		in.DLO = ob.dlo
		if ob.dlo != "" {
			// Swift: a DLO's HEAD has the ETag of its parts' ETags.
			var etags strings.Builder
			for _, p := range s.dloParts(ob) {
				etags.WriteString(p.etag)
			}
			in.ETag = md5hex([]byte(etags.String()))
		}
	case ob.dlo != "":
		in.Size = int64(len(ob.data)) // Swift lists a DLO manifest as the object it is
	case ob.slo != nil:
		in.ETag = ob.listETag
	}
	return in
}

// GetManifest implements ObjectStore.
func (s *Store) GetManifest(ctx context.Context, c, o string) ([]segments.ManifestEntry, error) {
	if err := s.enter(ctx, "GET-MANIFEST", c, o); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ob, ok := s.containers[c][o]
	if !ok {
		return nil, notFound("GET", c, o)
	}
	if ob.slo == nil {
		return nil, &segments.StatusError{Op: "GET", Object: c + "/" + o, Code: 400, Body: "not an SLO"}
	}
	return append([]segments.ManifestEntry(nil), ob.slo...), nil
}

// Copy implements ObjectStore: a manifest is copied as a manifest.
func (s *Store) Copy(ctx context.Context, c, src, dst string) error {
	if err := s.enter(ctx, "COPY", c, src); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ob, ok := s.containers[c][src]
	if !ok {
		return notFound("COPY", c, src)
	}
	cp := *ob
	cp.meta = copyMeta(ob.meta)
	cp.modified = time.Now()
	s.containers[c][dst] = &cp
	return nil
}

// Delete implements ObjectStore.
func (s *Store) Delete(ctx context.Context, c, o string) error {
	if err := s.enter(ctx, "DELETE", c, o); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.containers[c], o)
	return nil
}

// DeleteMany implements ObjectStore.
func (s *Store) DeleteMany(ctx context.Context, c string, objs []string) error {
	if err := s.enter(ctx, "BULK-DELETE", c, ""); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range objs {
		delete(s.containers[c], o)
	}
	return nil
}

// List implements ObjectStore.
func (s *Store) List(ctx context.Context, c, prefix string, delim rune, fn func(segments.Info) error) error {
	asked := time.Now()
	if err := s.enter(ctx, "LIST", c, prefix); err != nil {
		return err
	}
	s.mu.Lock()
	m, ok := s.containers[c]
	if !ok {
		s.mu.Unlock()
		return notFound("LIST", c, "")
	}
	var names []string
	for n := range m {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []segments.Info
	lastDir := ""
	for _, n := range names {
		if delim != 0 {
			if i := strings.IndexRune(n[len(prefix):], delim); i >= 0 {
				dir := n[:len(prefix)+i+1]
				if dir != lastDir {
					out = append(out, segments.Info{Container: c, Name: dir, Subdir: true, ContentType: "application/directory"})
					lastDir = dir
				}
				continue
			}
		}
		in := s.info(c, n, m[n], false)
		in.ListedAt = asked
		out = append(out, in)
	}
	s.mu.Unlock()
	// Swift sorts subdirs among names; keep name order.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for _, in := range out {
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// Limits implements ObjectStore.
func (s *Store) Limits(ctx context.Context) (segments.Limits, error) {
	if err := s.enter(ctx, "INFO", "", ""); err != nil {
		return segments.Limits{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits, nil
}

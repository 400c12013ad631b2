package segments

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Container is what the filesystem sees of Swift: the objects of one
// container (below a prefix), to open, create, reopen, remove and rename,
// with every storage rule decided here (segment layout, limits, staging,
// hashing, retries, verification, versions). It owns the ObjectStore, the
// segment container, the upload Pool, the Staging area and the Versions.
// Object names are full names in the container (the prefix included).
//
// All methods are safe for concurrent use.
type Container struct {
	o ContainerOptions
	v *Versions
}

// ContainerOptions configure a Container.
type ContainerOptions struct {
	Store ObjectStore // retries included (Retrying); readers bypass them
	Name  string      // the container
	// Prefix is the mount's object-name prefix, "" or ending in "/".
	Prefix string
	Pool   *Pool // shared upload memory and workers
	// Staging, if set, takes files written out of order (see
	// WriterOptions.Staging).
	Staging *Staging
	Limits  Limits // the cluster's, from /info
	Retry   RetryPolicy
	// Sums chooses the whole-file digests (WriterOptions.Sums).
	Sums Sums
	// StallTimeout cuts a GET whose body stops (ReaderOptions).
	StallTimeout time.Duration
	// Versions owns the versions; nil gives one with default options that
	// never reaps by itself (tests).
	Versions *Versions
	Log      *slog.Logger
}

// ErrNotReopenable: a plain object larger than one segment cannot be the
// start of a new version (the commit replaces it, so the new version
// could not reference it); it has to be rewritten whole.
var ErrNotReopenable = errors.New("a large plain object cannot be reopened for writing; rewrite it whole (O_TRUNC)")

// NewContainer returns the Container of o.
func NewContainer(o ContainerOptions) *Container {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	if o.Retry == (RetryPolicy{}) {
		o.Retry = DefaultRetryPolicy
	}
	if o.Limits.MaxManifestSegments == 0 {
		o.Limits = DefaultLimits
	}
	v := o.Versions
	if v == nil {
		v = NewVersions(o.Store, VersionsOptions{Container: o.Name, Scope: o.Prefix, Log: o.Log})
	}
	return &Container{o: o, v: v}
}

// Name is the container's name.
func (c *Container) Name() string { return c.o.Name }

// Prefix is the mount's object-name prefix ("" or ending in "/").
func (c *Container) Prefix() string { return c.o.Prefix }

// Versions is the owner of the container's versions.
func (c *Container) Versions() *Versions { return c.v }

// SegmentSize is the size of the segments files are cut into.
func (c *Container) SegmentSize() int64 { return c.o.Pool.SegmentSize() }

// Head returns an object's metadata.
func (c *Container) Head(ctx context.Context, name string) (Info, error) {
	return c.o.Store.Head(ctx, c.o.Name, name)
}

// List lists the container's objects under prefix (see ObjectStore.List).
func (c *Container) List(ctx context.Context, prefix string, delimiter rune, fn func(Info) error) error {
	return c.o.Store.List(ctx, c.o.Name, prefix, delimiter, fn)
}

// PutMarker writes an empty object of a content type (a directory marker).
func (c *Container) PutMarker(ctx context.Context, name, contentType string) error {
	_, err := c.o.Store.Put(ctx, c.o.Name, name, strings.NewReader(""), 0, "", PutOptions{ContentType: contentType})
	return err
}

// DeleteMarker deletes an object that references nothing (a directory
// marker); objects with versions go through Remove.
func (c *Container) DeleteMarker(ctx context.Context, name string) error {
	return c.o.Store.Delete(ctx, c.o.Name, name)
}

// Object is one version of an object, open for reading: it holds the
// version (no host deletes it while it is open) until Close.
type Object struct {
	Info     Info
	Manifest *Manifest
	*Reader
	hold *Hold
}

// Close ends the hold on the version. Idempotent.
func (o *Object) Close() { o.hold.Release() }

// Open resolves the current version of name for reading.
func (c *Container) Open(ctx context.Context, name string) (*Object, error) {
	m, in, err := Resolve(ctx, c.o.Store, c.o.Name, name)
	if err != nil {
		return nil, err
	}
	obj := &Object{Info: in, Manifest: m, Reader: c.reader(m)}
	if in.SLO || in.DLO != "" {
		// Its segments outlive an overwrite while it is held; a plain
		// object is replaced in place, so there is nothing to hold.
		obj.hold = c.v.Hold(m)
	}
	return obj, nil
}

func (c *Container) reader(m *Manifest) *Reader {
	return NewReader(c.o.Store, m, ReaderOptions{Retry: c.o.Retry, Log: c.o.Log, StallTimeout: c.o.StallTimeout})
}

// Create starts a new, empty version of name. ctx is the lifetime of its
// uploads (the mount's).
func (c *Container) Create(ctx context.Context, name string) *Writer {
	return c.writer(ctx, name, nil)
}

// Reopen starts a new version of name from its current one (a file
// opened for writing without O_TRUNC): a large object's segments are
// referenced, a small plain object is copied in; a missing object gives an
// empty version. life is the lifetime of the uploads, ctx the request's
// (it bounds the reads). It fails with ErrNotReopenable for a plain
// object larger than one segment.
func (c *Container) Reopen(ctx, life context.Context, name string) (*Writer, error) {
	m, in, err := Resolve(ctx, c.o.Store, c.o.Name, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return c.writer(life, name, nil), nil
	case err != nil:
		return nil, err
	case in.SLO || in.DLO != "":
		return c.writer(life, name, m), nil
	case in.Size > c.SegmentSize():
		c.o.Log.Error("opening a large plain object for writing needs O_TRUNC; rewrite it instead", "object", name, "size", in.Size)
		return nil, fmt.Errorf("reopen %s (%d bytes): %w", name, in.Size, ErrNotReopenable)
	}
	w := c.writer(life, name, nil)
	if err := copyInto(ctx, w, c.reader(m)); err != nil {
		w.Abort(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("reopen %s: copy the current version: %w", name, err)
	}
	return w, nil
}

// copyInto writes all of rd into w from offset 0, a segment-sized piece
// at a time at most.
func copyInto(ctx context.Context, w *Writer, rd *Reader) error {
	buf := make([]byte, min(rd.Size(), 4<<20))
	for off := int64(0); off < rd.Size(); {
		n, err := rd.ReadAt(ctx, buf, off)
		if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			return err
		}
		if _, err := w.WriteAt(ctx, buf[:n], off); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

func (c *Container) writer(life context.Context, name string, under *Manifest) *Writer {
	return NewWriter(life, c.o.Store, name, WriterOptions{
		Container:   c.o.Name,
		Pool:        c.o.Pool,
		MaxSegments: c.o.Limits.MaxManifestSegments,
		Log:         c.o.Log,
		Under:       under,
		Staging:     c.o.Staging,
		Sums:        c.o.Sums,
		Retry:       c.o.Retry,
		Versions:    c.v,
	})
}

// Remove removes name (see Versions.Remove): the name goes at once, its
// objects at a later reap.
func (c *Container) Remove(ctx context.Context, name string) error {
	in, err := c.Head(ctx, name)
	if err != nil {
		return err
	}
	return c.v.Remove(ctx, in)
}

// Rename gives the object src (as HEADed) the name dst (see
// Versions.Rename).
func (c *Container) Rename(ctx context.Context, src Info, dst string) error {
	return c.v.Rename(ctx, src, dst)
}

// Usage is what the account stores and may store, for a filesystem's
// size (statfs).
type Usage struct {
	Used    int64 // bytes the account stores, all its containers together
	Objects int64 // objects the account stores
	// Quota is the smaller of the account's and the container's quotas
	// (bytes), -1 if neither has one.
	Quota int64
}

// Usage reads the account's usage and quota and the container's quota:
// a HEAD of each. Swift updates the account's figures asynchronously, so
// they trail the latest writes. A user who may not HEAD the account (403:
// the container is shared with them by an ACL) gets the container's own
// usage instead.
func (c *Container) Usage(ctx context.Context) (Usage, error) {
	ai, err := c.o.Store.HeadAccount(ctx)
	shared := false
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		shared, err = true, nil
	}
	if err != nil {
		return Usage{}, err
	}
	ci, err := c.o.Store.HeadContainer(ctx, c.o.Name)
	if err != nil {
		return Usage{}, err
	}
	if shared {
		ai = AccountInfo{BytesUsed: ci.BytesUsed, Objects: ci.Objects, QuotaBytes: -1}
	}
	u := Usage{Used: ai.BytesUsed, Objects: ai.Objects, Quota: ai.QuotaBytes}
	if q := ci.QuotaBytes; q >= 0 && (u.Quota < 0 || q < u.Quota) {
		u.Quota = q
	}
	return u, nil
}

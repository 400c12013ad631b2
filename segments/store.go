package segments

import (
	"context"
	"io"
	"time"
)

// Info describes an object, or a pseudo-directory of a listing.
type Info struct {
	Container    string
	Name         string
	Size         int64 // bytes; for a manifest, the size of the whole large object
	ETag         string
	ContentType  string
	LastModified time.Time
	// Meta holds the X-Object-Meta-* headers, keys in lower case
	// without the prefix ("mtime", "sha256"). Only Head fills it.
	Meta map[string]string
	// Subdir is set for a pseudo-directory of a delimited listing.
	Subdir bool
	// SLO is set for a static large object manifest (Head only).
	SLO bool
	// DLO is the X-Object-Manifest value ("container/prefix") of a
	// dynamic large object manifest (Head only).
	DLO string
	// ListedAt is set for an entry of a container listing: when the
	// request for its page began. Size, ETag, ContentType and
	// LastModified are known, Meta, SLO and DLO are not (a zero-byte
	// object may be a DLO manifest; only a HEAD tells).
	ListedAt time.Time
	// ListedSLOETag is a listed SLO's slo_etag: what a HEAD of it says
	// its ETag is (a listing's ETag of an SLO is its manifest's MD5).
	ListedSLOETag string
}

// Listed reports whether in came from a listing (see ListedAt).
func (in Info) Listed() bool { return !in.ListedAt.IsZero() }

// SameVersion reports whether a listing's entry listed tells of the
// version a HEAD told of in head: the same size and ETag, an SLO's
// compared as a HEAD tells it.
func (head Info) SameVersion(listed Info) bool {
	etag := listed.ETag
	if listed.ListedSLOETag != "" {
		etag = listed.ListedSLOETag
	}
	return head.Size == listed.Size && head.ETag == etag
}

// ContainerInfo is what a HEAD of a container says.
type ContainerInfo struct {
	BytesUsed int64 // X-Container-Bytes-Used
	Objects   int64 // X-Container-Object-Count
	// QuotaBytes is X-Container-Meta-Quota-Bytes (Swift's container_quotas
	// middleware enforces it), -1 if there is none.
	QuotaBytes int64
}

// AccountInfo is what a HEAD of the account says. Swift updates the
// account's figures asynchronously (its container updater), so they lag
// behind writes by seconds to minutes.
type AccountInfo struct {
	BytesUsed  int64 // X-Account-Bytes-Used
	Objects    int64 // X-Account-Object-Count
	Containers int64 // X-Account-Container-Count
	// QuotaBytes is X-Account-Meta-Quota-Bytes (Swift's account_quotas
	// middleware enforces it), -1 if there is none.
	QuotaBytes int64
}

// PutOptions are the headers of an object PUT.
type PutOptions struct {
	ContentType string
	Meta        map[string]string // written as X-Object-Meta-<key>
	// DLO, if set, makes the PUT a DLO manifest (X-Object-Manifest).
	DLO string
}

// Limits are the cluster's limits, read from Swift's /info.
type Limits struct {
	MaxManifestSegments int   // slo.max_manifest_segments
	MaxManifestSize     int64 // slo.max_manifest_size, bytes
	MaxFileSize         int64 // swift.max_file_size, bytes
	ListingLimit        int   // swift.container_listing_limit: names a listing page may ask for
	SLO                 bool  // the slo middleware is present
	BulkDelete          bool
	// Problems names the limits /info gave that made no sense (and were
	// replaced by Swift's defaults), for the caller to log.
	Problems []string
}

// DefaultLimits are Swift's defaults, used when /info does not say.
var DefaultLimits = Limits{
	MaxManifestSegments: 1000,
	MaxManifestSize:     8 << 20,
	MaxFileSize:         5 << 30,
	ListingLimit:        10000,
	SLO:                 true,
}

// ManifestEntry is one entry of an SLO manifest, as PUT and as GET
// (multipart-manifest=get) use them.
type ManifestEntry struct {
	Container string
	Object    string
	ETag      string // MD5 of the segment (for a nested manifest: its ETag); may be empty
	Size      int64  // bytes of the segment object (before Range)
	// Range, if Length > 0, selects bytes [Offset, Offset+Length) of the segment.
	Offset, Length int64
	// SubSLO is set (on GET) when the entry is itself an SLO manifest.
	SubSLO bool
}

// Bytes is the number of bytes the entry contributes to the large object.
func (e ManifestEntry) Bytes() int64 {
	if e.Length > 0 {
		return e.Length
	}
	return e.Size
}

// ObjectStore is the seam between imagefs and Swift. All methods are safe for
// concurrent use. Every method that may block takes a context and stops when
// it is done. Errors wrap ErrNotFound, ErrStale and ErrAuth where they apply,
// and *StatusError for other HTTP answers.
//
// Implementations do not retry (beyond one re-authentication after a 401):
// Retrying adds the policy on top.
type ObjectStore interface {
	// Put uploads an object of exactly size bytes. body is rewound for a
	// retry. The returned ETag is the MD5 Swift computed; if md5 is not
	// empty Swift verifies it (422 on mismatch).
	Put(ctx context.Context, container, object string, body io.ReadSeeker, size int64, md5 string, o PutOptions) (etag string, err error)
	// Get opens bytes [off, off+n) of an object (n < 0: to the end). If
	// ifMatch is not empty the object must still have that ETag (ErrStale
	// otherwise). The caller must Close the body. For a large object the
	// range is served through its manifest: the fs reads segments instead.
	Get(ctx context.Context, container, object string, off, n int64, ifMatch string) (io.ReadCloser, error)
	// Head returns an object's metadata.
	Head(ctx context.Context, container, object string) (Info, error)
	// PutManifest writes an SLO manifest (multipart-manifest=put).
	PutManifest(ctx context.Context, container, object string, entries []ManifestEntry, o PutOptions) (etag string, err error)
	// GetManifest reads an SLO manifest (multipart-manifest=get).
	GetManifest(ctx context.Context, container, object string) ([]ManifestEntry, error)
	// Copy copies an object server-side within a container. A large
	// object's manifest is copied, not its content, so both names share
	// the segments; metadata is kept.
	Copy(ctx context.Context, container, src, dst string) error
	// Delete removes one object (of a large object, the manifest only). A
	// missing object is not an error.
	Delete(ctx context.Context, container, object string) error
	// DeleteMany removes objects of one container (bulk delete where the
	// cluster has it). Missing objects are not an error.
	DeleteMany(ctx context.Context, container string, objects []string) error
	// List calls fn for the objects whose names start with prefix, in name
	// order. With a delimiter, names that go on past it are folded into
	// Subdir entries. fn's error stops the listing and is returned.
	List(ctx context.Context, container, prefix string, delimiter rune, fn func(Info) error) error
	// ListContainers calls fn for the account's containers whose names
	// start with prefix, in name order (the account listing). fn's error
	// stops the listing and is returned.
	ListContainers(ctx context.Context, prefix string, fn func(name string) error) error
	// HeadContainer checks that a container exists (ErrNotFound if not)
	// and returns its usage and quota.
	HeadContainer(ctx context.Context, container string) (ContainerInfo, error)
	// HeadAccount returns the usage and quota of the store's account.
	HeadAccount(ctx context.Context) (AccountInfo, error)
	// CreateContainer creates a container if it does not exist.
	CreateContainer(ctx context.Context, container string) error
	// Limits reads the cluster's /info.
	Limits(ctx context.Context) (Limits, error)
}

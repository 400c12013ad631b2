// Package segments is imagefs' data path to Swift: how an image is laid
// out in objects, written, read, and how its versions come and go.
//
// # Objects
//
// An image of at most one segment is one plain object, <container>/<path>.
// A larger one is a static large object (SLO): a manifest at <path>, and
// segments in <container>_segments named <path>/<upload id>/<%08d>. The
// upload id (UTC time + 48 random bits, NewUploadID) makes every upload's
// segments its own, so two uploads of a path never share a segment and the
// previous version stays whole until the new manifest replaces it. Holes
// (unwritten ranges) are ranges of one segment of zeros per upload,
// <path>/<upload id>/zero. A file with more segments than one manifest may
// hold (Limits.MaxManifestSegments, from Swift's /info) gets nested
// manifests, <path>/<upload id>/manifest-<level>-<%06d>. Objects written
// by other tools (plain, SLO, DLO such as Glance's "<uuid>" with parts
// "<uuid>-00001"…) are read as they are.
//
// Every object imagefs uploads carries its block digests (digest.go), so
// that every read of it is verified.
//
// # Writing (Writer, Pool)
//
// A Writer streams one new version into segment buffers; sealed segments
// upload in parallel from a Pool shared by all files, which bounds memory
// to (workers+1) segments. Commit publishes the version atomically: the
// tail, then (write-ahead) the retirement of the version it replaces, then
// one PUT of the small object or of the manifest. Nothing is visible
// before, and a failed or abandoned upload deletes its own segments (an
// upload whose commit answer was lost checks whether it landed first).
//
// # Reading (Reader, Resolve)
//
// Resolve flattens a version into a Manifest of leaf segments (bounded:
// depth, fan-out, total, no cycles); a Reader reads it by ranged GETs
// pinned by ETag, resumed after broken bodies, verified block by block.
//
// # Versions (Versions)
//
// One owner decides when the objects of a version may go. Overwrite,
// unlink and rename retire the version they replace by a record in Swift
// (write-ahead); hosts that have a version open hold it in their lease in
// Swift; a reap, after the grace period, re-reads every manifest and the
// leases and deletes only recorded objects that nothing references or
// pins, and only those the version owns (its segments below the mount's
// prefix, a Glance DLO's parts). imagefs gc (FindOrphans, DeleteOrphans)
// reaps every host's records and removes the uploads that died with their
// daemon, never anything recorded or held.
//
// # Errors and retries
//
// ObjectStore is the seam to Swift (SwiftStore, or the in-memory
// segmentstest.Store); Retrying adds the one retry policy (errors.go,
// retry.go). Errors wrap the package's sentinels (ErrNotFound, ErrStale,
// ErrAuth, ErrBadAnswer, ErrCorrupt, …), which fs maps to errno values.
package segments

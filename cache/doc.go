// Package cache holds imagefs' caches: the block cache of the read path
// ([Blocks], with its prefetcher [Stream]) and a small TTL cache of
// metadata lookups ([Meta]). It imports no other imagefs package: fs opens
// a [File] per open file handle with a segments.Reader as its [Source]
// and reads through a Stream.
//
// # Versions and blocks
//
// The cache holds object versions, never objects. A version is named by
// its version key, an opaque string that changes whenever the content may
// have (segments.Manifest.Version: a hash of the container, the object's
// name and every segment with its ETag). Every [File] of one key shares
// every block of it, across opens and, on disk, across restarts; a
// changed image has another key, so it is never served from the cache. An
// empty key means the content cannot be identified: that File is read
// through memory only and shares nothing.
//
// A version is cut into blocks of [Options.BlockSize] bytes (default
// [DefaultBlockSize], 256 KiB; the last block is short). A block is the
// unit of caching and of fetching: a read costs at least the blocks it
// touches. The bytes of a block never change once written, so a block is
// handed around without copying; a reader copies out of it only into its
// own buffer.
//
// # Tiers
//
// A read looks for each block it touches in this order:
//
//  1. the memory tier: blocks by key, least recently used first to go,
//     within [Options.Memory] bytes, which count the blocks being fetched
//     too;
//  2. the blocks in flight: a block being fetched is waited for, never
//     fetched twice;
//  3. the disk tier, with [Options.Dir]: a version's whole-image file
//     (sealed, or filling in place), else a block file per block, least
//     recently used first to go, within [Options.DirSize] bytes; a block
//     read from disk is cached in memory too;
//  4. the [Source]: the block is fetched.
//
// A fetched block is put in memory and queued for the disk tier, which
// writes it on its own goroutines.
//
// # Fetches
//
// Fetches are single-flight: a block is in flight once however many
// readers want it, and every reader of it waits for that one fetch. A
// fetch covers a run of consecutive missing blocks with one
// [Source.CopyRange] (one ranged GET), and hands each block to its waiters
// as soon as the block is full. A fetch that begins inside a block (a
// random read) begins at the read's first byte and fetches the head of
// that block last, and a reader waits only for its own bytes of a block
// being filled, not for the whole block.
//
// Fetches run on the cache's goroutines, not on the readers': the context
// of a read only bounds its wait. A fetch counts the interests in it
// (readers waiting, streams holding it); when the last one drops before
// its blocks are all in, it is cancelled and the blocks still to come are
// forgotten. Errors are never cached: the waiters of the fetch that failed
// get the error, and the next read fetches afresh.
//
// # Prefetch and its budget
//
// A [Stream] is one reader's view of a File. Once three reads in a row
// land near each other, it prefetches ahead of them: a window of
// [StreamOptions.Initial] bytes that doubles up to [StreamOptions.Max],
// fetched in chunks of [StreamOptions.Chunk] bytes in parallel, cut at the
// Source's segment boundaries. A read far from the previous ones (a seek)
// drops the stream's prefetches; those nobody else wants are cancelled.
//
// The blocks of prefetches in flight count against
// [Options.PrefetchMemory] (default half of Memory) and, with every other
// fetch, against Memory. A prefetch chunk that does not fit is dropped
// ([Stats.PrefetchDropped]), never waited for, so a reader never waits
// for memory. Once fetched, prefetched blocks are cached blocks like any
// other: a stream that stops reading pins no budget.
//
// # When memory is short
//
// The memory tier evicts its least recently used blocks whenever a block
// is cached or a fetch starts, until the cached blocks and the blocks in
// flight fit in Memory. Blocks in flight are never evicted, and demand
// fetches (what a reader asks for) are never refused: when they alone
// exceed Memory, the cache holds nothing else until they end. Prefetches
// are refused first, as above. A reader that has a block's bytes in hand
// keeps them whatever the cache evicts. The disk tier never makes a reader
// wait either, but it does make the fetches wait: a block is handed to its
// readers first, then queued for the disk writers, and a fetch whose
// block finds the queue full waits for room ([Stats.DiskWriteWaits]), so
// that an image read whole is on disk whole even when the disk is busy.
// A block is not persisted ([Stats.DiskWriteDropped]) only when the queue
// stays full for 30 s (logged once per episode), the disk is full (logged
// once, and the writes pause for a minute; reads go on uncached) or a
// write fails (logged once).
//
// # The disk format
//
// The disk tier keeps each block in its own file, named from a hash of
// the version key and the block's index (see disk.go for the layout). A
// file is self-describing: its header names the version key, the block
// index, the block size and the data's length, and checksums (CRC-32C)
// cover the header and the data. A file that does not hold exactly the
// block the reader wants (another version, another block size, a torn
// write, a flipped bit) is deleted and counted ([Stats.DiskCorrupt]),
// never served. Files are written under a temporary name and renamed;
// stray temporaries are removed at the next start. The directory is
// locked (flock), so two daemons never share it. Recency survives a
// restart through the files' mtimes, and DirSize, which counts the
// headers too, is enforced at the start as well.
//
// # Whole images
//
// A version read from its first block, or warmed, is written straight
// into one whole-image file of its bytes as they are, sparse while it
// fills, with a log of the blocks present and their CRC-32C (sparse.go):
// no block files, no copy. Other versions get block files; once every
// block of one is on disk they are assembled, in the background and one
// at a time, into such a file. A complete file is sealed: a seal names the
// key and the CRC-32C of every block and fingerprints the file (inode,
// size, mtime, ctime); the log and the block files are then removed
// (whole.go). A partial file is one LRU entry sized by its blocks present;
// after a restart its blocks are served once their CRC matches, a torn one
// is fetched again. The whole file and its seal are one
// entry of the disk LRU. Loads from it check each block's CRC; a file
// that no longer matches its seal (changed behind the cache's back) is
// discarded at the start and at [File.Whole], which opens it for FUSE
// passthrough. A close cuts an assembly short; it resumes when the
// version is read again.
//
// # Invariants
//
//   - A block is served only from its own version: memory keys are the
//     version key and the index, and a block file must hold the whole key.
//   - A block is in flight at most once; a fetch is started only for
//     blocks neither cached in memory nor in flight.
//   - Every block of a fetch is settled exactly once, published or failed:
//     that ends its waits and its reservation in the memory tier.
//   - After every insertion and every fetch start, the cached bytes plus
//     the bytes in flight are at most Memory, unless the bytes in flight
//     alone exceed it; prefetch bytes in flight are at most PrefetchMemory.
//   - A fetch is cancelled only when nobody is interested in it any more.
//
// # Concurrency
//
// [Blocks], [File], [Stream] and [Meta] are safe for concurrent use. One
// mutex, Blocks.mu, guards the memory tier, the blocks in flight, the
// fetches' state and the counters; no I/O is done under it (the source is
// read and block files are read and written outside it). The disk tier has
// its own mutex, taken after Blocks.mu and never the other way round; a
// Stream's mutex is taken before Blocks.mu. [Blocks.Close] cancels every
// fetch, waits for the fetch goroutines and the disk writers, and releases
// the directory; reads after it fail.
//
// # Where things are
//
// Calls go one way, from the readers down to the tiers:
//
//   - stream.go: Stream, the prefetcher, over File;
//   - warm.go: File.Warm, which fetches blocks through the fetch engine
//     and writes them to the disk tier itself, waiting for the writes;
//   - read.go: File.ReadAt, as memory hits, misses (joined or fetched),
//     disk loads and the collection of the bytes;
//   - fetch.go and fill.go: the fetch engine, its blocks in flight, its
//     waiters, and the writer that fills blocks as the bytes arrive;
//   - memory.go, disk.go, whole.go and sparse.go: the two tiers, which
//     call nothing above them;
//   - lru.go: the byte-bounded least-recently-used index both tiers use;
//   - blocks.go: Blocks, its options and counters, and File;
//   - meta.go: Meta, the metadata cache;
//   - peer.go: Peers, peer fill: a Source wrapper that asks the fleet's
//     other hosts (groupcache) before Swift, and verifies what they send.
package cache

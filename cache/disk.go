package cache

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The persistent tier keeps each block in its own file,
//
//	<dir>/blocks-v1/<hh>/<hash>-<index>
//
// where hash is the first 16 bytes (hex) of the SHA-256 of the version key,
// hh its first byte, and index the block number (hex). A file is
// self-describing: a header names what it holds and a checksum covers the
// data, so a file that does not match what the reader expects (another
// version, another block size, a torn write after a crash) is discarded,
// never served:
//
//	magic     [8]byte  "IMGFSBLK"
//	version   uint32   1
//	blockSize uint32   the cache's block size when written
//	index     uint64   block number
//	dataLen   uint32   bytes of data (the last block of a file is short)
//	dataCRC   uint32   CRC-32C of the data
//	keyLen    uint32   then keyLen bytes of the version key
//	headCRC   uint32   CRC-32C of everything before it
//	data      [dataLen]byte
//
// (little endian). Files are written to a temporary name and renamed, so a
// crash leaves either the whole file, a stray temporary (removed at the
// next start) or, on filesystems that reorder the two, a file that fails
// its checks. The directory is locked (flock) so that two daemons never
// share it. Recency survives a restart through the files' mtimes.
const (
	diskMagic   = "IMGFSBLK"
	diskVersion = 1
	diskSubdir  = "blocks-v1"
	fixedHeader = 8 + 4 + 4 + 8 + 4 + 4 + 4 // before the key
	tmpMarker   = ".tmp"
	// touchEvery limits mtime updates on hits: recency needs no more.
	touchEvery = 10 * time.Minute
	// diskFullPause is how long writes stop after the disk filled up.
	diskFullPause = time.Minute
	writeQueue    = 64
	writers       = 2
	// storeWait is how long a fetch waits for room in the write queue
	// before the block is dropped (counted and logged): long enough for
	// any disk that is merely busy, short enough that a hung one does not
	// stall reads for good.
	storeWait = 30 * time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type diskKey struct {
	hash [16]byte
	idx  int64
}

type writeJob struct {
	key  string
	k    diskKey
	data []byte
	size int64  // the image's
	crc  uint32 // the data's, for a filling file
	done func() // called when the job is written or dropped (queued jobs)
}

// disk is the persistent tier of a Blocks cache.
type disk struct {
	root      string // <dir>/blocks-v1
	limit     int64
	blockSize int64
	log       *slog.Logger
	lock      *os.File
	queue     chan writeJob
	wg        sync.WaitGroup
	writeFile func(j writeJob, fl *filling) (int64, error) // d.writeBlock; tests replace it
	storeWait time.Duration                                // storeWait; tests shorten it

	mu        sync.Mutex              // guards the fields below
	files     lru[diskKey, time.Time] // the block files, sized, with their mtimes (see touchEvery)
	pauseTill time.Time               // no writes before (disk full)
	full      bool                    // the disk-full condition was logged
	errLogged bool
	slowSince time.Time // the write queue stayed full past storeWait (logged); zero when not
	// The whole-image files (whole.go): sealed ones by hash, those
	// filling in place (sparse.go), the number of block files of each
	// hash, the hashes being assembled.
	wholes     map[[16]byte]*whole
	fills      map[[16]byte]*filling
	counts     map[[16]byte]int64
	assembling map[[16]byte]bool
	// removing counts the whole files of each hash taken off the index
	// and not yet removed: no new filling file is made at that path
	// meanwhile (the removal would take it along).
	removing map[[16]byte]int
	// writing holds the block files being written, each with a channel
	// closed when its write ends: a block fetched for a warm is queued by
	// its fetch and written by the warm too, and only one of them writes.
	writing map[diskKey]chan struct{}

	assembler chan struct{} // one assembly at a time
	closing   atomic.Bool

	writes, dropped, corrupt, waits, wholesMade atomic.Int64
}

// openDisk opens (creating it if needed) and locks the cache directory,
// removes stray temporaries and indexes the block files.
func openDisk(dir string, limit, blockSize int64, log *slog.Logger) (*disk, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("cache directory %s: the cache size must be positive", dir)
	}
	root := filepath.Join(dir, diskSubdir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("cache directory %s is in use by another imagefs mount: give each mount its own --cache-dir", dir)
		}
		return nil, fmt.Errorf("lock cache directory %s: %w", dir, err)
	}
	d := &disk{root: root, limit: limit, blockSize: blockSize, log: log, lock: lock,
		queue: make(chan writeJob, writeQueue), storeWait: storeWait,
		wholes: map[[16]byte]*whole{}, fills: map[[16]byte]*filling{}, counts: map[[16]byte]int64{}, assembling: map[[16]byte]bool{}, removing: map[[16]byte]int{}, writing: map[diskKey]chan struct{}{}, assembler: make(chan struct{}, 1)}
	d.writeFile = d.writeBlock
	if err := d.scan(); err != nil {
		lock.Close()
		return nil, err
	}
	for range writers {
		d.wg.Go(d.writer)
	}
	return d, nil
}

// scan indexes the block files, oldest first, and trims to the limit.
func (d *disk) scan() error {
	type found struct {
		k     diskKey
		size  int64
		mtime time.Time
	}
	var all []found
	err := d.scanWholes(func(k diskKey, size int64, mtime time.Time) { all = append(all, found{k, size, mtime}) })
	if err != nil {
		return fmt.Errorf("scan cache directory: %w", err)
	}
	err = filepath.WalkDir(d.root, func(p string, de iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		name := de.Name()
		if strings.Contains(name, tmpMarker) {
			_ = os.Remove(p) // a write cut short by a crash
			return nil
		}
		k, ok := parseBlockName(name)
		if !ok || d.path(k) != p {
			return nil // not ours (or in the wrong directory): leave it alone
		}
		if d.wholes[k.hash] != nil {
			_ = os.Remove(p) // in its whole file already
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return nil
		}
		all = append(all, found{k, info.Size(), info.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan cache directory: %w", err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mtime.Before(all[j].mtime) })
	for _, f := range all {
		d.indexLocked(f.k, f.mtime, f.size)
	}
	d.remove(d.trimLocked())
	d.log.Info("block cache directory", "dir", filepath.Dir(d.root), "entries", d.files.len(), "whole_images", len(d.wholes), "bytes", d.files.bytes, "limit", d.limit)
	return nil
}

func blockName(k diskKey) string {
	h := hex.EncodeToString(k.hash[:])
	return filepath.Join(h[:2], h+"-"+strconv.FormatInt(k.idx, 16))
}

// parseBlockName reads the key of a block file's name. Only the name
// blockName gives is one (lower-case hex, no sign, no leading zeros): the
// cache reaches a block by the name it computes, so a file under another
// spelling of the same key ("-01" for "-1") could never be read nor
// removed, only counted.
func parseBlockName(name string) (diskKey, bool) {
	h, idx, ok := strings.Cut(name, "-")
	if !ok || len(h) != 32 {
		return diskKey{}, false
	}
	var k diskKey
	if _, err := hex.Decode(k.hash[:], []byte(h)); err != nil {
		return diskKey{}, false
	}
	n, err := strconv.ParseInt(idx, 16, 64)
	if err != nil || n < 0 {
		return diskKey{}, false
	}
	k.idx = n
	if filepath.Base(blockName(k)) != name {
		return diskKey{}, false
	}
	return k, true
}

func (d *disk) path(k diskKey) string { return filepath.Join(d.root, blockName(k)) }

func (d *disk) has(k diskKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.files.peek(k) != nil || d.wholes[k.hash] != nil || d.fills[k.hash].holds(k.idx)
}

// holds reports whether block idx is in fl (nil: no). Called with disk.mu held.
func (fl *filling) holds(idx int64) bool {
	return fl != nil && idx >= 0 && idx < int64(len(fl.have)) && fl.have[idx]
}

// maybeAssembleLocked starts the sealing of the whole file of version
// key (size bytes) once all its blocks are on disk, in its filling file
// or in block files: when the last one is written, or when one is loaded
// (a sealing cut short by a close goes on at the next mount).
func (d *disk) maybeAssembleLocked(hash [16]byte, key string, size int64) {
	if d.wholes[hash] != nil || d.assembling[hash] || d.closing.Load() {
		return
	}
	fl := d.fillLocked(hash, key, size, false)
	n := d.counts[hash]
	if fl != nil {
		n += fl.n
	}
	if n != d.nblocks(size) {
		return
	}
	if fl == nil { // all in block files: assembled into a new file
		if fl = d.fillLocked(hash, key, size, true); fl == nil {
			return
		}
	}
	d.assembling[hash] = true
	d.wg.Go(func() { d.assemble(fl) })
}

// indexLocked adds (or refreshes) an entry of the index.
func (d *disk) indexLocked(k diskKey, mtime time.Time, size int64) {
	if k.idx >= 0 && d.files.peek(k) == nil {
		d.counts[k.hash]++
	}
	d.files.put(k, mtime, size)
}

// unindexLocked drops an entry of the index (not its files).
// It returns the filling file of a whole entry, for the caller to close.
func (d *disk) unindexLocked(k diskKey) *filling {
	if d.files.peek(k) == nil {
		return nil
	}
	d.files.remove(k)
	return d.unindexedLocked(k)
}

// unindexedLocked accounts for an entry gone from d.files. It returns
// the filling file of a whole entry, for the caller to close.
func (d *disk) unindexedLocked(k diskKey) *filling {
	if k.idx == wholeIdx {
		delete(d.wholes, k.hash)
		d.removing[k.hash]++ // until removed (removedLocked)
		fl := d.fills[k.hash]
		delete(d.fills, k.hash)
		return fl
	}
	if d.counts[k.hash]--; d.counts[k.hash] <= 0 {
		delete(d.counts, k.hash)
	}
	return nil
}

func (d *disk) addStats(s *Stats) {
	d.mu.Lock()
	s.DiskBytes = d.files.bytes
	s.DiskWholeImages = int64(len(d.wholes))
	d.mu.Unlock()
	s.DiskWrites = d.writes.Load()
	s.DiskWriteDropped = d.dropped.Load()
	s.DiskCorrupt = d.corrupt.Load()
	s.DiskWriteWaits = d.waits.Load()
}

// load reads block k of version key, want bytes, from its file, or
// returns nil (and forgets the file) if it is missing or does not hold
// exactly that block.
func (d *disk) load(k diskKey, key string, want, size int64) []byte {
	d.mu.Lock()
	w := d.wholes[k.hash]
	fl := d.fillLocked(k.hash, key, size, false)
	var crc uint32
	inFill := fl.holds(k.idx)
	if inFill {
		crc = fl.crcs[k.idx]
	}
	d.mu.Unlock()
	if w != nil {
		return d.loadWhole(k, w, key, want)
	}
	if inFill {
		return d.loadFill(fl, k.idx, crc, want)
	}
	p := d.path(k)
	data, err := readBlockFile(p, key, k.idx, d.blockSize, want, nil)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.corrupt.Add(1)
			d.log.Warn("discarding a bad block cache file", "file", p, "err", err)
		}
		d.forget(k, true)
		return nil
	}
	d.touch(k, p)
	d.mu.Lock()
	d.maybeAssembleLocked(k.hash, key, size)
	d.mu.Unlock()
	return data
}

// loadFill reads block idx (want bytes, CRC crc) from its filling file. A
// block that fails its CRC is forgotten and fetched again (checkBlock);
// the rest of the file stays.
func (d *disk) loadFill(fl *filling, idx int64, crc uint32, want int64) []byte {
	data := d.checkBlock(fl, idx, crc, want, nil)
	if data == nil {
		return nil
	}
	d.touch(diskKey{fl.hash, wholeIdx}, d.wholePath(fl.hash)+fillSuffix)
	d.mu.Lock()
	d.maybeAssembleLocked(fl.hash, fl.key, fl.size)
	d.mu.Unlock()
	return data
}

// readBlockFile reads and checks a block file, into buf if it is large
// enough (else into a new buffer).
func readBlockFile(p, key string, idx, blockSize, want int64, buf []byte) ([]byte, error) {
	fh, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	// The size is checked before anything is read: a file cannot make
	// the reader allocate more than the block it wants.
	if hl := blockHeaderLen(key); st.Size() != hl+want {
		return nil, fmt.Errorf("file has %d bytes, want %d", st.Size(), hl+want)
	}
	if int64(cap(buf)) < st.Size() {
		buf = make([]byte, st.Size())
	}
	buf = buf[:st.Size()]
	if _, err := io.ReadFull(fh, buf); err != nil {
		return nil, err
	}
	return parseBlockFile(buf, key, idx, blockSize, want)
}

// blockHeaderLen is the length of the header of a block file of key.
func blockHeaderLen(key string) int64 { return int64(fixedHeader + len(key) + 4) }

// parseBlockFile checks the bytes of a block file: it must hold exactly
// want bytes of block idx of the version key, written by a cache of
// blockSize blocks, its header and data intact. It returns the data.
func parseBlockFile(buf []byte, key string, idx, blockSize, want int64) ([]byte, error) {
	hl := blockHeaderLen(key)
	if want < 0 || int64(len(buf)) != hl+want {
		return nil, fmt.Errorf("file has %d bytes, want %d", len(buf), hl+want)
	}
	h := buf[:hl]
	le := binary.LittleEndian
	switch {
	case string(h[:8]) != diskMagic:
		return nil, errors.New("not a block file")
	case le.Uint32(h[8:]) != diskVersion:
		return nil, fmt.Errorf("format version %d", le.Uint32(h[8:]))
	case crc32.Checksum(h[:hl-4], castagnoli) != le.Uint32(h[hl-4:]):
		return nil, errors.New("header checksum mismatch")
	case int64(le.Uint32(h[12:])) != blockSize:
		return nil, fmt.Errorf("block size %d, the cache uses %d", le.Uint32(h[12:]), blockSize)
	case le.Uint64(h[16:]) != uint64(idx):
		return nil, fmt.Errorf("holds block %d, want %d", le.Uint64(h[16:]), idx)
	case int64(le.Uint32(h[24:])) != want:
		return nil, fmt.Errorf("holds %d bytes, want %d", le.Uint32(h[24:]), want)
	case int(le.Uint32(h[32:])) != len(key) || string(h[fixedHeader:fixedHeader+len(key)]) != key:
		return nil, errors.New("holds another object version")
	}
	data := buf[hl:]
	if crc32.Checksum(data, castagnoli) != le.Uint32(h[28:]) {
		return nil, errors.New("data checksum mismatch")
	}
	return data, nil
}

// encodeHeader builds the header of a block file.
func encodeHeader(key string, idx, blockSize int64, data []byte) []byte {
	h := make([]byte, fixedHeader+len(key)+4)
	le := binary.LittleEndian
	copy(h, diskMagic)
	le.PutUint32(h[8:], diskVersion)
	le.PutUint32(h[12:], uint32(blockSize))
	le.PutUint64(h[16:], uint64(idx))
	le.PutUint32(h[24:], uint32(len(data)))
	le.PutUint32(h[28:], crc32.Checksum(data, castagnoli))
	le.PutUint32(h[32:], uint32(len(key)))
	copy(h[fixedHeader:], key)
	le.PutUint32(h[len(h)-4:], crc32.Checksum(h[:len(h)-4], castagnoli))
	return h
}

// store queues block k of version key for writing. It is called by the
// fetches, after the block was handed to its readers: when the writers are
// behind, it waits for room in the queue (backpressure on the fetch, not on
// the readers of the block), so that a busy disk still gets every block of
// an image that was read whole. Only a queue that stays full for storeWait
// drops the block, counted and logged.
func (d *disk) store(k diskKey, key string, data []byte, size int64, done func()) {
	j := writeJob{key: key, k: k, data: data, size: size, done: done}
	if k.idx == 0 {
		// Read from its start: the version goes into its whole file from
		// now on, also the blocks queued after this one that a writer
		// takes before it.
		d.startFill(k.hash, key, size)
	}
	select {
	case d.queue <- j:
		return
	default:
	}
	d.waits.Add(1)
	t := time.NewTimer(d.storeWait)
	defer t.Stop()
	select {
	case d.queue <- j:
		d.mu.Lock()
		if !d.slowSince.IsZero() {
			d.log.Info("block cache directory keeps up again", "dir", filepath.Dir(d.root), "slow_for", time.Since(d.slowSince).Round(time.Second))
			d.slowSince = time.Time{}
		}
		d.mu.Unlock()
	case <-t.C:
		done()
		n := d.dropped.Add(1)
		d.mu.Lock()
		if d.slowSince.IsZero() {
			d.slowSince = time.Now()
			d.log.Warn("block cache directory too slow: blocks are not persisted while its writes stay behind (imagefs_cache_disk_write_dropped_total counts them)",
				"dir", filepath.Dir(d.root), "waited", d.storeWait, "dropped_total", n)
		}
		d.mu.Unlock()
	}
}

func (d *disk) writer() {
	for j := range d.queue {
		d.write(j)
		j.done()
	}
}

// write writes a block file, unless it is on disk already. If another
// write of the same block is under way, it waits for that one instead: a
// caller that writes synchronously (a warm) returns when the block is on
// disk, or is not because that write failed.
func (d *disk) write(j writeJob) {
	d.mu.Lock()
	for d.writing[j.k] != nil {
		ch := d.writing[j.k]
		d.mu.Unlock()
		<-ch
		d.mu.Lock()
	}
	paused := time.Now().Before(d.pauseTill)
	exists := d.files.peek(j.k) != nil || d.wholes[j.k.hash] != nil || d.fills[j.k.hash].holds(j.k.idx)
	fl := d.fillLocked(j.k.hash, j.key, j.size, false)
	if exists || paused {
		d.mu.Unlock()
		if !exists {
			d.dropped.Add(1)
		}
		return
	}
	done := make(chan struct{})
	d.writing[j.k] = done
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.writing, j.k)
		d.mu.Unlock()
		close(done)
	}()
	if fl != nil {
		j.crc = crc32.Checksum(j.data, castagnoli)
	}
	size, err := d.writeFile(j, fl)
	if err != nil {
		d.dropped.Add(1)
		if !errors.Is(err, errGone) {
			d.writeFailed(err)
		}
		return
	}
	d.writes.Add(1)
	d.mu.Lock()
	if d.full {
		d.full = false
		d.log.Info("block cache directory writable again", "dir", filepath.Dir(d.root))
	}
	if fl != nil {
		d.markLocked(fl, j.k.idx, j.crc, int64(len(j.data)))
	} else {
		d.indexLocked(j.k, time.Now(), size) // written twice: one entry, the last
	}
	victims := d.trimLocked()
	d.maybeAssembleLocked(j.k.hash, j.key, j.size)
	d.mu.Unlock()
	d.remove(victims)
}

// writeFailed logs a failed write once per episode. A full disk pauses
// writing: reads go on from Swift, uncached.
func (d *disk) writeFailed(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		d.pauseTill = time.Now().Add(diskFullPause)
		if !d.full {
			d.full = true
			d.log.Error("block cache directory is full: reading without caching new blocks until space frees up; lower --cache-size or free space",
				"dir", filepath.Dir(d.root), "cached_bytes", d.files.bytes, "err", err)
		}
		return
	}
	if !d.errLogged {
		d.errLogged = true
		d.log.Error("cannot write to the block cache directory; reads go on uncached", "dir", filepath.Dir(d.root), "err", err)
	}
}

// writeBlock writes block j into its filling file fl, or without one
// into its own block file; it returns the bytes a block file takes.
func (d *disk) writeBlock(j writeJob, fl *filling) (int64, error) {
	if fl != nil {
		return 0, fl.writeBlock(d, j.k.idx, j.data, j.crc)
	}
	return writeAtomic(d.path(j.k), false, encodeHeader(j.key, j.k.idx, d.blockSize, j.data), j.data)
}

// writeAtomic writes parts to p under a temporary name and renames it,
// after an fsync with sync. It returns the bytes written.
func writeAtomic(p string, sync bool, parts ...[]byte) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+tmpMarker+"*")
	if err != nil {
		return 0, err
	}
	var n int64
	for _, b := range parts {
		if err == nil {
			_, err = tmp.Write(b)
			n += int64(len(b))
		}
	}
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return 0, err
	}
	return n, nil
}

// victim is an entry taken off the index, whose files are to go: a block
// file, or a whole file (sealed, or filling: fl).
type victim struct {
	k  diskKey
	fl *filling
}

// trimLocked takes the least recently used entries off the index until the
// rest fits in the limit, and returns them for removal.
func (d *disk) trimLocked() []victim {
	var victims []victim
	d.files.trim(d.limit, func(k diskKey, _ time.Time) {
		victims = append(victims, victim{k, d.unindexedLocked(k)})
	})
	return victims
}

// remove removes the files of entries. A whole file still open for the
// kernel (passthrough) lives on until it is closed.
func (d *disk) remove(victims []victim) {
	for _, v := range victims {
		switch {
		case v.fl != nil:
			v.fl.closeFiles(d, true) // after the writes under way
			d.removed(v.k.hash)
		case v.k.idx == wholeIdx:
			d.removeWhole(v.k.hash)
			d.removed(v.k.hash)
		default:
			_ = os.Remove(d.path(v.k))
		}
	}
}

// removed ends the removal of a whole file of hash taken off the index.
func (d *disk) removed(hash [16]byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removing[hash]--; d.removing[hash] <= 0 {
		delete(d.removing, hash)
	}
}

// forget drops the entry of a block file (and the file).
func (d *disk) forget(k diskKey, removeFile bool) {
	d.mu.Lock()
	d.unindexLocked(k)
	d.mu.Unlock()
	if removeFile {
		_ = os.Remove(d.path(k))
	}
}

func (d *disk) close() error {
	d.closing.Store(true)
	close(d.queue)
	d.wg.Wait()
	d.mu.Lock()
	fills := make([]*filling, 0, len(d.fills))
	for _, fl := range d.fills {
		fills = append(fills, fl)
	}
	d.mu.Unlock()
	for _, fl := range fills {
		fl.closeFiles(d, false) // resumed at the next start
	}
	return d.lock.Close()
}

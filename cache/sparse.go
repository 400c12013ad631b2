package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// A version read from its first block, or warmed, is written straight
// into its whole-image file (whole.go), sparse while it fills: each block
// with one pwrite at its offset, no block file and no assembly copy. One
// block file per block cost ~0.7 ms of system CPU per file create on the
// lab's VM, 3-5 CPU s per GiB (test/bench/READ.md). Other versions (random
// reads that never touched block 0) keep block files: their eviction goes
// block by block, where a filling file is evicted whole.
//
// Next to the data file, a fill log records which blocks are in it:
//
//	<dir>/whole-v1/<hh>/<hash>       the image, sparse, blocks at their offsets
//	<dir>/whole-v1/<hh>/<hash>.fill  header, then one record per block written
//
//	magic     [8]byte  "IMGFSFIL"
//	version   uint32   1
//	blockSize uint32
//	size      uint64   the image's bytes
//	keyLen    uint32   then keyLen bytes of the version key
//	headCRC   uint32   CRC-32C of everything before it
//	records   {index uint64, dataCRC uint32, recCRC uint32}...
//
// A record is appended after its block's pwrite, without fsync: after a
// crash a record may name a block whose data never reached the disk (the
// block's CRC then fails when it is read: it is fetched again, never
// served) and the log may end in a torn record (ignored, and cut off
// before the next append). The last record of a block wins. The blocks of
// a log found at the start are unchecked until read back against their
// CRC, by a reader or by the assembly, which checks those left before it
// seals. When the last block is in, the file is fsynced and sealed as an
// assembled one, and the log is removed. A filling file and its log are
// one entry of the disk LRU, sized by the blocks present and the log.
const (
	fillMagic   = "IMGFSFIL"
	fillVersion = 1
	fillSuffix  = ".fill"
	fillFixed   = 8 + 4 + 4 + 8 + 4
	fillRecord  = 8 + 4 + 4
	directAlign = 4096 // O_DIRECT wants offsets, lengths and buffers aligned to this
)

// filling is a whole-image file being filled in place.
type filling struct {
	hash [16]byte
	key  string
	size int64

	// guarded by disk.mu:
	have    []bool
	checked []bool // have, and written by this process or read back against its CRC
	crcs    []uint32
	n       int64 // blocks present
	bytes   int64 // their bytes
	logLen  int64 // the log's valid length

	// io is held shared by the writes and loads of blocks, exclusively to
	// seal, close or remove the files, so that none of those happens under
	// a write and no write reaches a file being removed.
	io       sync.RWMutex
	openMu   sync.Mutex // guards the fields below
	fresh    bool       // no files yet: they are created empty at the first write
	gone     bool       // sealed, removed or closed: no more writes
	removed  bool       // its files were removed: no more reads either
	data     *os.File
	direct   *os.File // O_DIRECT, for full aligned blocks; nil where refused
	log      *os.File // O_APPEND
	noDirect atomic.Bool
}

func newFilling(hash [16]byte, key string, size, nblocks int64) *filling {
	return &filling{hash: hash, key: key, size: size, fresh: true,
		have: make([]bool, nblocks), checked: make([]bool, nblocks), crcs: make([]uint32, nblocks),
		logLen: int64(fillFixed + len(key) + 4)}
}

func encodeFillHeader(key string, size, blockSize int64) []byte {
	le := binary.LittleEndian
	b := make([]byte, 8, fillFixed+len(key)+4)
	copy(b, fillMagic)
	b = le.AppendUint32(b, fillVersion)
	b = le.AppendUint32(b, uint32(blockSize))
	b = le.AppendUint64(b, uint64(size))
	b = le.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func encodeFillRecord(idx int64, crc uint32) []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, fillRecord)
	b = le.AppendUint64(b, uint64(idx))
	b = le.AppendUint32(b, crc)
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// parseFill reads a fill log. The records after the first bad one (a torn
// append) are ignored; logLen is where the valid ones end.
func parseFill(b []byte, hash [16]byte, blockSize int64) (*filling, error) {
	le := binary.LittleEndian
	if len(b) < fillFixed+4 || string(b[:8]) != fillMagic {
		return nil, errors.New("not a fill log")
	}
	if v := le.Uint32(b[8:]); v != fillVersion {
		return nil, fmt.Errorf("fill log format version %d", v)
	}
	if bs := int64(le.Uint32(b[12:])); bs != blockSize {
		return nil, fmt.Errorf("block size %d, the cache uses %d", bs, blockSize)
	}
	size, kl := int64(le.Uint64(b[16:])), int64(le.Uint32(b[24:]))
	hl := fillFixed + kl + 4
	if size < 0 || kl > int64(len(b)) || hl > int64(len(b)) {
		return nil, errors.New("fill log is inconsistent")
	}
	if crc32.Checksum(b[:hl-4], castagnoli) != le.Uint32(b[hl-4:]) {
		return nil, errors.New("fill log header checksum mismatch")
	}
	n := (size + blockSize - 1) / blockSize
	fl := newFilling(hash, string(b[fillFixed:fillFixed+kl]), size, n)
	fl.fresh = false
	for off := hl; off+fillRecord <= int64(len(b)); off += fillRecord {
		r := b[off : off+fillRecord]
		idx := int64(le.Uint64(r))
		if crc32.Checksum(r[:12], castagnoli) != le.Uint32(r[12:]) || idx < 0 || idx >= n {
			break
		}
		if !fl.have[idx] {
			fl.have[idx] = true
			fl.n++
			fl.bytes += min(blockSize, size-idx*blockSize)
		}
		fl.crcs[idx] = le.Uint32(r[8:])
		fl.checked[idx] = false // a later record of a block wins, unchecked too
		fl.logLen = off + fillRecord
	}
	return fl, nil
}

// readFill reads the fill log of hash (found by the scan).
func (d *disk) readFill(hash [16]byte) (*filling, error) {
	p := d.wholePath(hash) + fillSuffix
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.Size() > 1<<30 {
		return nil, fmt.Errorf("fill log of %d bytes", fi.Size())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(d.wholePath(hash)); err != nil {
		return nil, err
	}
	return parseFill(b, hash, d.blockSize)
}

// fillLocked returns the filling file of version key (size bytes), or
// with create a new one if it has none and it would fit in the limit.
func (d *disk) fillLocked(hash [16]byte, key string, size int64, create bool) *filling {
	if fl := d.fills[hash]; fl != nil || !create {
		if fl != nil && (fl.key != key || fl.size != size) {
			return nil
		}
		return fl
	}
	if d.wholes[hash] != nil || d.removing[hash] > 0 || d.closing.Load() || size+int64(fillFixed+len(key)+4)+4*d.nblocks(size) > d.limit {
		return nil
	}
	fl := newFilling(hash, key, size, d.nblocks(size))
	d.fills[hash] = fl
	d.files.put(diskKey{hash, wholeIdx}, time.Now(), fl.logLen)
	return fl
}

// startFill makes version key fill its whole file in place from now on
// (a warm).
func (d *disk) startFill(hash [16]byte, key string, size int64) {
	d.mu.Lock()
	d.fillLocked(hash, key, size, true)
	d.mu.Unlock()
}

// markLocked records block idx (n bytes, CRC crc) as present in fl, if fl
// is still the version's filling file.
func (d *disk) markLocked(fl *filling, idx int64, crc uint32, n int64) {
	if d.fills[fl.hash] != fl {
		return
	}
	if !fl.have[idx] {
		fl.have[idx] = true
		fl.n++
		fl.bytes += n
	}
	fl.crcs[idx] = crc
	fl.checked[idx] = true
	fl.logLen += fillRecord
	d.files.put(diskKey{fl.hash, wholeIdx}, time.Now(), fl.bytes+fl.logLen)
}

// open opens (or, fresh, creates) the files of fl. Called with fl.io held.
func (fl *filling) open(d *disk) error {
	fl.openMu.Lock()
	defer fl.openMu.Unlock()
	if fl.gone {
		return errGone
	}
	if fl.data != nil {
		return nil
	}
	p := d.wholePath(fl.hash)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	flags := os.O_RDWR | os.O_CREATE
	if fl.fresh {
		flags |= os.O_TRUNC
	}
	data, err := os.OpenFile(p, flags, 0o600)
	if err != nil {
		return err
	}
	log, err := os.OpenFile(p+fillSuffix, os.O_WRONLY|os.O_CREATE, 0o600)
	if err == nil {
		if fl.fresh {
			err = log.Truncate(0)
			if err == nil {
				_, err = log.Write(encodeFillHeader(fl.key, fl.size, d.blockSize))
			}
		} else {
			err = log.Truncate(fl.logStart(d)) // a torn record at its end
		}
	}
	if err == nil {
		_, err = log.Seek(0, 2)
	}
	if err != nil {
		data.Close()
		if log != nil {
			log.Close()
		}
		return err
	}
	fl.data, fl.log, fl.fresh = data, log, false
	if d.blockSize%directAlign == 0 {
		if direct, err := os.OpenFile(p, os.O_WRONLY|syscall.O_DIRECT, 0); err == nil {
			fl.direct = direct
		}
	}
	return nil
}

// logStart is the log's valid length when its files were opened.
func (fl *filling) logStart(d *disk) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fl.logLen
}

// writeBlock writes block j into fl and appends its record. Full blocks
// in aligned buffers (the allocator page-aligns blocks of 256 KiB) go
// with O_DIRECT: a buffered write to the lab's ext4 costs the writer ~2.8
// CPU s per GiB against ~0.25 direct (test/bench/READ.md).
func (fl *filling) writeBlock(d *disk, idx int64, data []byte, crc uint32) error {
	fl.io.RLock()
	defer fl.io.RUnlock()
	if err := fl.open(d); err != nil {
		return err
	}
	off := idx * d.blockSize
	done := false
	if fl.direct != nil && !fl.noDirect.Load() && int64(len(data)) == d.blockSize &&
		uintptr(unsafe.Pointer(unsafe.SliceData(data)))%directAlign == 0 {
		_, err := fl.direct.WriteAt(data, off)
		switch {
		case err == nil:
			done = true
		case errors.Is(err, syscall.EINVAL):
			fl.noDirect.Store(true) // refused here: the page cache from now on
		default:
			return err
		}
	}
	if !done {
		if _, err := fl.data.WriteAt(data, off); err != nil {
			return err
		}
	}
	_, err := fl.log.Write(encodeFillRecord(idx, crc))
	return err
}

// readBlock reads block idx (want bytes) from fl's data file, into buf if
// it is large enough; errGone if the file went meanwhile.
func (fl *filling) readBlock(d *disk, idx, want int64, buf []byte) ([]byte, error) {
	fl.io.RLock()
	defer fl.io.RUnlock()
	fl.openMu.Lock()
	removed := fl.removed
	fl.openMu.Unlock()
	if removed {
		return nil, errGone
	}
	fh, err := os.Open(d.wholePath(fl.hash))
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if int64(cap(buf)) < want {
		buf = make([]byte, want)
	}
	buf = buf[:want]
	if _, err := fh.ReadAt(buf, idx*d.blockSize); err != nil && want > 0 {
		return nil, err
	}
	return buf, nil
}

// closeFiles closes fl's files; with remove, it removes them too (and a
// seal left by a seal that lost the race with an eviction).
func (fl *filling) closeFiles(d *disk, remove bool) {
	fl.io.Lock()
	defer fl.io.Unlock()
	fl.openMu.Lock()
	defer fl.openMu.Unlock()
	fl.gone = true
	for _, f := range []*os.File{fl.data, fl.direct, fl.log} {
		if f != nil {
			f.Close()
		}
	}
	fl.data, fl.direct, fl.log = nil, nil, nil
	if remove {
		fl.removed = true
		p := d.wholePath(fl.hash)
		_ = os.Remove(p + fillSuffix)
		_ = os.Remove(p + sealSuffix)
		_ = os.Remove(p)
	}
}

// seal makes a complete fl a sealed whole file: the data is fsynced and
// fingerprinted, the seal written, the log removed.
func (fl *filling) seal(d *disk) (*whole, error) {
	fl.io.Lock()
	defer fl.io.Unlock()
	if err := fl.open(d); err != nil { // a complete fill found at the start
		return nil, err
	}
	fl.openMu.Lock()
	defer fl.openMu.Unlock()
	err := fl.data.Truncate(fl.size) // (a resumed file may have been longer)
	if err == nil {
		err = fl.data.Sync()
	}
	var fi os.FileInfo
	if err == nil {
		fi, err = fl.data.Stat()
	}
	for _, f := range []*os.File{fl.data, fl.direct, fl.log} {
		if f != nil {
			f.Close()
		}
	}
	fl.data, fl.direct, fl.log, fl.gone = nil, nil, nil, true
	if err != nil {
		return nil, err
	}
	w := &whole{key: fl.key, size: fl.size, fp: fingerprintOf(fi)}
	d.mu.Lock()
	w.crcs = append([]uint32(nil), fl.crcs...)
	d.mu.Unlock()
	p := d.wholePath(fl.hash)
	if _, err := writeAtomic(p+sealSuffix, true, encodeSeal(w, d.blockSize)); err != nil {
		return nil, err
	}
	_ = os.Remove(p + fillSuffix)
	return w, nil
}

// checkBlock reads block idx (want bytes) of fl back, into buf if it is
// large enough, and checks it against its CRC. A block that fails (a torn
// write before a crash, or damage) is dropped from fl, to be fetched
// again: it is never served, nor sealed. It returns the block, or nil.
func (d *disk) checkBlock(fl *filling, idx int64, crc uint32, want int64, buf []byte) []byte {
	data, err := fl.readBlock(d, idx, want, buf)
	if err == nil && crc32.Checksum(data, castagnoli) != crc {
		err = fmt.Errorf("block %d: data checksum mismatch", idx)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ours := d.fills[fl.hash] == fl
	if err == nil {
		if ours && fl.have[idx] && fl.crcs[idx] == crc {
			fl.checked[idx] = true
		}
		return data
	}
	if errors.Is(err, errGone) {
		return nil
	}
	// Counted and logged once per bad block: the assembly and a reader
	// may both have read it.
	if !ours || (fl.have[idx] && fl.crcs[idx] == crc) {
		d.corrupt.Add(1)
		d.log.Warn("discarding a bad block of a partial whole-image cache file", "file", d.wholePath(fl.hash), "block", idx, "err", err)
	}
	if ours && fl.have[idx] && fl.crcs[idx] == crc {
		fl.have[idx], fl.checked[idx] = false, false
		fl.n--
		fl.bytes -= want
		d.files.put(diskKey{fl.hash, wholeIdx}, time.Now(), fl.bytes+fl.logLen)
	}
	return nil
}

package cache

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// An image version whose blocks are all on disk is assembled into one
// whole-image file, the image's bytes as they are (so that the kernel can
// read it itself: FUSE passthrough, see [File.Whole]), next to a seal:
//
//	<dir>/whole-v1/<hh>/<hash>       the image, byte for byte
//	<dir>/whole-v1/<hh>/<hash>.seal  what it holds and how it was left
//
// The seal names the version key, the block size, the image's size and
// the CRC-32C of every block (checked on every load the daemon serves
// from it), and the data file's inode, size, mtime and ctime as they were
// when it was sealed: a data file changed since (any write changes its
// ctime, which no one can set back) does not match and is discarded, never
// handed to the kernel. Its blocks' files are removed once it is sealed;
// recency is the seal's mtime (touching the data file would change its
// ctime). The whole file and its seal are one entry of the disk tier's LRU.
//
//	magic     [8]byte  "IMGFSWHL"
//	version   uint32   1
//	blockSize uint32
//	size      uint64   the image's bytes
//	ino       uint64   the data file's inode, size, mtime and ctime (ns)
//	dsize     uint64
//	mtime     int64
//	ctime     int64
//	keyLen    uint32   then keyLen bytes of the version key
//	crcs      [n]uint32 CRC-32C of each block, n = ceil(size/blockSize)
//	headCRC   uint32   CRC-32C of everything before it
const (
	wholeMagic   = "IMGFSWHL"
	wholeVersion = 1
	wholeSubdir  = "whole-v1"
	sealSuffix   = ".seal"
	sealFixed    = 8 + 4 + 4 + 8 + 8 + 8 + 8 + 8 + 4
	wholeIdx     = -1 // the LRU entry of a whole file: diskKey{hash, wholeIdx}
)

// whole is a sealed whole-image file.
type whole struct {
	key  string
	size int64
	crcs []uint32
	fp   fingerprint
}

// fingerprint is what a sealed data file must still show.
type fingerprint struct {
	ino          uint64
	size         int64
	mtime, ctime int64
}

func fingerprintOf(fi os.FileInfo) fingerprint {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fingerprint{}
	}
	return fingerprint{ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

func (d *disk) wholePath(hash [16]byte) string {
	h := hex.EncodeToString(hash[:])
	return filepath.Join(filepath.Dir(d.root), wholeSubdir, h[:2], h)
}

func (d *disk) nblocks(size int64) int64 { return (size + d.blockSize - 1) / d.blockSize }

func encodeSeal(w *whole, blockSize int64) []byte {
	le := binary.LittleEndian
	b := make([]byte, sealFixed, sealFixed+len(w.key)+4*len(w.crcs)+4)
	copy(b, wholeMagic)
	le.PutUint32(b[8:], wholeVersion)
	le.PutUint32(b[12:], uint32(blockSize))
	le.PutUint64(b[16:], uint64(w.size))
	le.PutUint64(b[24:], w.fp.ino)
	le.PutUint64(b[32:], uint64(w.fp.size))
	le.PutUint64(b[40:], uint64(w.fp.mtime))
	le.PutUint64(b[48:], uint64(w.fp.ctime))
	le.PutUint32(b[56:], uint32(len(w.key)))
	b = append(b, w.key...)
	for _, c := range w.crcs {
		b = le.AppendUint32(b, c)
	}
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func parseSeal(b []byte, blockSize int64) (*whole, error) {
	le := binary.LittleEndian
	if len(b) < sealFixed+4 || string(b[:8]) != wholeMagic {
		return nil, errors.New("not a seal")
	}
	if v := le.Uint32(b[8:]); v != wholeVersion {
		return nil, fmt.Errorf("seal format version %d", v)
	}
	if crc32.Checksum(b[:len(b)-4], castagnoli) != le.Uint32(b[len(b)-4:]) {
		return nil, errors.New("seal checksum mismatch")
	}
	if bs := int64(le.Uint32(b[12:])); bs != blockSize {
		return nil, fmt.Errorf("block size %d, the cache uses %d", bs, blockSize)
	}
	w := &whole{size: int64(le.Uint64(b[16:])), fp: fingerprint{ino: le.Uint64(b[24:]), size: int64(le.Uint64(b[32:])),
		mtime: int64(le.Uint64(b[40:])), ctime: int64(le.Uint64(b[48:]))}}
	kl := int64(le.Uint32(b[56:]))
	if w.size < 0 || kl > int64(len(b)) {
		return nil, errors.New("seal is inconsistent")
	}
	n := (w.size + blockSize - 1) / blockSize
	if int64(len(b)) != sealFixed+kl+4*n+4 || w.fp.size != w.size {
		return nil, errors.New("seal is inconsistent")
	}
	w.key = string(b[sealFixed : sealFixed+kl])
	w.crcs = make([]uint32, n)
	for i := range w.crcs {
		w.crcs[i] = le.Uint32(b[sealFixed+kl+4*int64(i):])
	}
	return w, nil
}

// scanWholes indexes the sealed whole files (found entries, appended to
// all) and removes temporaries, unsealed data files and bad seals.
func (d *disk) scanWholes(add func(k diskKey, size int64, mtime time.Time)) error {
	dir := filepath.Join(filepath.Dir(d.root), wholeSubdir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, de iofs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		name := de.Name()
		if strings.Contains(name, tmpMarker) {
			_ = os.Remove(p)
			return nil
		}
		h, isSeal := strings.CutSuffix(name, sealSuffix)
		isFill := false
		if !isSeal {
			h, isFill = strings.CutSuffix(h, fillSuffix)
		}
		var hash [16]byte
		if len(h) != 32 {
			return nil
		}
		if _, err := hex.Decode(hash[:], []byte(h)); err != nil || d.wholePath(hash) != strings.TrimSuffix(strings.TrimSuffix(p, sealSuffix), fillSuffix) {
			return nil // not ours
		}
		if !isSeal && !isFill {
			if !exists(p+sealSuffix) && !exists(p+fillSuffix) {
				_ = os.Remove(p) // a whole file never sealed nor filling
			}
			return nil
		}
		if isFill {
			if exists(d.wholePath(hash) + sealSuffix) {
				_ = os.Remove(p) // sealed: the log is done with
				return nil
			}
			fl, err := d.readFill(hash)
			if err != nil {
				d.corrupt.Add(1)
				d.log.Warn("discarding a partial whole-image cache file", "file", d.wholePath(hash), "err", err)
				d.removeWhole(hash)
				return nil
			}
			info, err := de.Info()
			if err != nil {
				return nil
			}
			d.fills[hash] = fl
			add(diskKey{hash, wholeIdx}, fl.bytes+fl.logLen, info.ModTime())
			return nil
		}
		w, sealInfo, err := d.readSeal(hash)
		if err != nil {
			d.corrupt.Add(1)
			d.log.Warn("discarding a whole-image cache file", "file", strings.TrimSuffix(p, sealSuffix), "err", err)
			d.removeWhole(hash)
			return nil
		}
		d.wholes[hash] = w
		add(diskKey{hash, wholeIdx}, w.size+sealInfo.Size(), sealInfo.ModTime())
		return nil
	})
}

// readSeal reads the seal of hash and checks that the data file is still
// the one sealed.
func (d *disk) readSeal(hash [16]byte) (*whole, os.FileInfo, error) {
	p := d.wholePath(hash)
	si, err := os.Stat(p + sealSuffix)
	if err != nil {
		return nil, nil, err
	}
	if si.Size() > 1<<30 {
		return nil, nil, fmt.Errorf("seal of %d bytes", si.Size())
	}
	b, err := os.ReadFile(p + sealSuffix)
	if err != nil {
		return nil, nil, err
	}
	w, err := parseSeal(b, d.blockSize)
	if err != nil {
		return nil, nil, err
	}
	di, err := os.Stat(p)
	if err != nil {
		return nil, nil, err
	}
	if fingerprintOf(di) != w.fp {
		return nil, nil, errors.New("the data file changed since it was sealed")
	}
	return w, si, nil
}

func (d *disk) removeWhole(hash [16]byte) {
	p := d.wholePath(hash)
	_ = os.Remove(p + sealSuffix)
	_ = os.Remove(p + fillSuffix)
	_ = os.Remove(p)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, os.ErrNotExist)
}

// dropWhole forgets a whole file found bad and removes it.
func (d *disk) dropWhole(hash [16]byte, why error) {
	d.corrupt.Add(1)
	d.log.Warn("discarding a bad whole-image cache file", "file", d.wholePath(hash), "err", why)
	d.mu.Lock()
	indexed := d.files.peek(diskKey{hash, wholeIdx}) != nil
	d.unindexLocked(diskKey{hash, wholeIdx}) // a sealed file: no filling one
	d.mu.Unlock()
	d.removeWhole(hash)
	if indexed {
		d.removed(hash)
	}
}

// assemble completes the filling file fl of version key (size bytes)
// with the blocks still held as block files, each checked as it is read,
// and seals it; the block files are then removed. It gives up quietly when
// a block went meanwhile (evicted; it is fetched into fl when read again)
// and at close.
func (d *disk) assemble(fl *filling) {
	defer func() {
		d.mu.Lock()
		delete(d.assembling, fl.hash)
		d.mu.Unlock()
	}()
	d.assembler <- struct{}{} // one at a time: the writers need the disk too
	defer func() { <-d.assembler }()
	buf := make([]byte, blockHeaderLen(fl.key)+d.blockSize) // for each block in turn
	var blocks []victim
	for i := range d.nblocks(fl.size) {
		if d.closing.Load() {
			return
		}
		d.mu.Lock()
		ours, have, checked, logged := d.fills[fl.hash] == fl, fl.have[i], fl.checked[i], fl.crcs[i]
		d.mu.Unlock()
		if !ours {
			return
		}
		want := min(d.blockSize, fl.size-i*d.blockSize)
		if have && !checked && d.checkBlock(fl, i, logged, want, buf) == nil {
			return // bad: fetched into fl when read again
		}
		if have {
			continue
		}
		k := diskKey{fl.hash, i}
		data, err := readBlockFile(d.path(k), fl.key, i, d.blockSize, want, buf)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err != nil {
			d.corrupt.Add(1)
			d.log.Warn("discarding a bad block cache file", "file", d.path(k), "err", err)
			d.forget(k, true)
			return
		}
		crc := crc32.Checksum(data, castagnoli)
		if err := fl.writeBlock(d, i, data, crc); err != nil {
			if !errors.Is(err, errGone) {
				d.writeFailed(err)
			}
			return
		}
		d.mu.Lock()
		d.markLocked(fl, i, crc, want)
		d.mu.Unlock()
	}
	w, err := fl.seal(d)
	d.mu.Lock()
	ours := d.fills[fl.hash] == fl
	if ours {
		delete(d.fills, fl.hash)
	}
	if err != nil || !ours {
		if ours {
			d.files.remove(diskKey{fl.hash, wholeIdx})
			d.removing[fl.hash]++ // until closeFiles below removed its files
		}
		d.mu.Unlock()
		if err != nil && !errors.Is(err, errGone) {
			d.log.Warn("cannot seal a whole image in the block cache directory; it is fetched again", "dir", filepath.Dir(d.root), "err", err)
		}
		fl.closeFiles(d, ours) // not ours: the eviction removes them
		if ours {
			d.removed(fl.hash)
		}
		return
	}
	for i := range int64(len(w.crcs)) {
		if k := (diskKey{fl.hash, i}); d.files.peek(k) != nil {
			d.unindexLocked(k)
			blocks = append(blocks, victim{k: k})
		}
	}
	d.wholes[fl.hash] = w
	d.files.put(diskKey{fl.hash, wholeIdx}, time.Now(), w.size+int64(len(encodeSeal(w, d.blockSize))))
	victims := d.trimLocked()
	d.mu.Unlock()
	d.remove(blocks)
	d.remove(victims)
	d.wholesMade.Add(1)
}

var errGone = errors.New("gone")

// loadWhole reads block k (want bytes) from the whole file w of version
// key and checks it against its CRC. A bad block discards the whole file.
func (d *disk) loadWhole(k diskKey, w *whole, key string, want int64) []byte {
	if w.key != key || k.idx >= int64(len(w.crcs)) || want != min(d.blockSize, w.size-k.idx*d.blockSize) {
		return nil
	}
	p := d.wholePath(k.hash)
	fh, err := os.Open(p)
	if err != nil {
		d.dropWhole(k.hash, err)
		return nil
	}
	defer fh.Close()
	buf := make([]byte, want)
	if _, err := fh.ReadAt(buf, k.idx*d.blockSize); err != nil && !(errors.Is(err, io.EOF) && want == 0) {
		d.dropWhole(k.hash, err)
		return nil
	}
	if crc32.Checksum(buf, castagnoli) != w.crcs[k.idx] {
		d.dropWhole(k.hash, fmt.Errorf("block %d: data checksum mismatch", k.idx))
		return nil
	}
	d.touch(diskKey{k.hash, wholeIdx}, p+sealSuffix)
	return buf
}

// openWhole opens the whole file of version key (size bytes) for the
// kernel to read, if there is one and it is still the file sealed.
func (d *disk) openWhole(hash [16]byte, key string, size int64) (*os.File, bool) {
	d.mu.Lock()
	w := d.wholes[hash]
	d.mu.Unlock()
	if w == nil || w.key != key || w.size != size {
		return nil, false
	}
	p := d.wholePath(hash)
	fh, err := os.Open(p)
	if err != nil {
		d.dropWhole(hash, err)
		return nil, false
	}
	fi, err := fh.Stat()
	if err != nil || fingerprintOf(fi) != w.fp {
		fh.Close()
		if err == nil {
			err = errors.New("the data file changed since it was sealed")
		}
		d.dropWhole(hash, err)
		return nil, false
	}
	d.touch(diskKey{hash, wholeIdx}, p+sealSuffix)
	return fh, true
}

// touch marks k recently used, on disk at most every touchEvery.
func (d *disk) touch(k diskKey, p string) {
	d.mu.Lock()
	var touch bool
	if touched := d.files.get(k); touched != nil {
		if now := time.Now(); now.Sub(*touched) > touchEvery {
			*touched, touch = now, true
		}
	}
	d.mu.Unlock()
	if touch {
		now := time.Now()
		_ = os.Chtimes(p, now, now)
	}
}

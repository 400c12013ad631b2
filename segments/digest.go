package segments

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
)

// Verified reads.
//
// Every object imagefs uploads (segments, the zero segment, a small file's
// single object) carries the CRC-32C of each of its blocks in its own
// metadata, which Swift returns with every GET of it: a Reader that reads
// such an object checks each block before a byte of it leaves the Reader,
// so bad bytes are never handed to the block cache (nor to the kernel). A
// block whose check fails is fetched once more, then the read fails with
// ErrCorrupt (EIO) and a log line. Ranges are widened to whole blocks for
// that (at most one block on each side).
//
// Objects written by other tools have no block digests: a read that covers
// a whole such segment of at most maxWholeVerify bytes is checked against
// the MD5 its manifest records (its ETag); other reads of them are not
// verified. Swift itself checks each object's MD5 on upload and in its
// auditors.

// ErrCorrupt: bytes read from Swift do not match the checksum recorded for
// them, twice.
var ErrCorrupt = errors.New("data does not match its recorded checksum")

// Metadata keys of the block digests (X-Object-Meta-<key>).
const (
	metaDigestBlock = "imagefs-crc32c-block" // the block size, bytes
	metaDigestPart  = "imagefs-crc32c-"      // + 0, 1, …: base64 of the big-endian CRCs, in order
)

// Swift's default limits on object metadata: 256 bytes a value, 4096 in
// all. The digests use at most maxDigests CRCs (~2.7 KiB in base64).
const (
	minDigestBlock = 256 << 10
	maxDigests     = 512
	digestChunk    = 240 // base64 characters per header
)

// maxDigestedSize bounds the objects whose ranges a Reader widens to
// whole digest blocks (Swift's objects are at most 5 GiB by default).
const maxDigestedSize = 1 << 40

// maxWholeVerify bounds the segments of other tools whose MD5 a read
// checks: the bytes are held back until the whole segment is in.
const maxWholeVerify = 8 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// digestBlock is the block size of the digests of an object of size
// bytes: 256 KiB, doubled until at most maxDigests blocks cover it.
func digestBlock(size int64) int64 {
	b := int64(minDigestBlock)
	for blocks(size, b) > maxDigests && b < 1<<50 {
		b *= 2
	}
	return b
}

// blocks is how many blocks of b bytes cover size bytes (no overflow).
func blocks(size, b int64) int64 {
	n := size / b
	if size%b != 0 {
		n++
	}
	return n
}

// blockDigests computes the digests of the size bytes that hashRange
// feeds to a hash (a segment buffer's bytes, without copying them).
func blockDigests(size int64, hashRange func(lo, hi int64, h hash.Hash)) (block int64, crcs []uint32) {
	block = digestBlock(size)
	h := crc32.New(castagnoli)
	for off := int64(0); off < size; off += block {
		h.Reset()
		hashRange(off, min(off+block, size), h)
		crcs = append(crcs, h.Sum32())
	}
	return block, crcs
}

// zeroDigests computes the digests of size zero bytes without reading.
func zeroDigests(size int64) (block int64, crcs []uint32) {
	block = digestBlock(size)
	full := crc32.Checksum(make([]byte, min(block, size)), castagnoli)
	for off := int64(0); off < size; off += block {
		if n := size - off; n < block {
			crcs = append(crcs, crc32.Checksum(make([]byte, n), castagnoli))
		} else {
			crcs = append(crcs, full)
		}
	}
	return block, crcs
}

// digestMeta encodes digests as object metadata, adding to meta (nil:
// a new map).
func digestMeta(meta map[string]string, block int64, crcs []uint32) map[string]string {
	if meta == nil {
		meta = map[string]string{}
	}
	raw := make([]byte, 4*len(crcs))
	for i, c := range crcs {
		binary.BigEndian.PutUint32(raw[4*i:], c)
	}
	enc := base64.RawStdEncoding.EncodeToString(raw)
	meta[metaDigestBlock] = strconv.FormatInt(block, 10)
	for i := 0; len(enc) > 0; i++ {
		n := min(digestChunk, len(enc))
		meta[metaDigestPart+strconv.Itoa(i)] = enc[:n]
		enc = enc[n:]
	}
	return meta
}

// parseDigestMeta decodes the digests of an object from its metadata
// (keys in lower case without the X-Object-Meta- prefix); ok is false when
// there are none or they make no sense for an object of size bytes.
func parseDigestMeta(meta map[string]string, size int64) (block int64, crcs []uint32, ok bool) {
	v, found := meta[metaDigestBlock]
	if !found {
		return 0, nil, false
	}
	block, err := strconv.ParseInt(v, 10, 64)
	if err != nil || block < minDigestBlock || block > 1<<40 || size < 0 {
		return 0, nil, false
	}
	var enc strings.Builder
	for i := 0; ; i++ {
		part, found := meta[metaDigestPart+strconv.Itoa(i)]
		if !found {
			break
		}
		enc.WriteString(part)
		if enc.Len() > 2*maxDigests*8 {
			return 0, nil, false
		}
	}
	raw, err := base64.RawStdEncoding.DecodeString(enc.String())
	if err != nil || len(raw)%4 != 0 {
		return 0, nil, false
	}
	crcs = make([]uint32, len(raw)/4)
	for i := range crcs {
		crcs[i] = binary.BigEndian.Uint32(raw[4*i:])
	}
	if int64(len(crcs)) != blocks(size, block) {
		return 0, nil, false
	}
	return block, crcs, true
}

// metaOf returns the object metadata a Get body carries, if its store
// reports it.
func metaOf(rc io.Reader) map[string]string {
	if m, ok := rc.(interface{ Meta() map[string]string }); ok {
		return m.Meta()
	}
	return nil
}

// verifier sits between a GET body of bytes [lo, hi) of an object and
// the Reader's writer, which wants [off, end) of them. With block digests
// it holds each whole block back until its CRC matches; with want
// (a whole-object MD5) it holds everything back until the end. Bytes
// outside [off, end) are dropped.
type verifier struct {
	w        io.Writer
	name     string
	size     int64 // of the object
	pos      int64 // object offset of the next byte to come
	off, end int64
	block    int64
	crcs     []uint32
	buf      []byte // the current block (or the whole object for md5)
	bufAt    int64  // object offset of buf[0]
	md5      hash.Hash
	want     string // hex MD5 the whole object must have
	passed   int64  // bytes of [off, end) written to w
}

// Write implements io.Writer.
func (v *verifier) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if v.md5 != nil {
			v.md5.Write(p)
			v.buf = append(v.buf, p...)
			v.pos += int64(len(p))
			break
		}
		if v.block == 0 {
			if err := v.forward(p, v.pos); err != nil {
				return 0, err
			}
			v.pos += int64(len(p))
			break
		}
		k := v.pos / v.block
		bEnd := (k + 1) * v.block
		take := min(int64(len(p)), bEnd-v.pos)
		if len(v.buf) == 0 {
			v.bufAt = v.pos
		}
		v.buf = append(v.buf, p[:take]...)
		v.pos += take
		p = p[take:]
		if v.pos == bEnd {
			if err := v.checkBlock(k); err != nil {
				return 0, err
			}
		}
	}
	return total, nil
}

// ReadFrom reads the body straight into the block being checked (one copy
// fewer than io.Copy's buffer): io.Copy uses it.
func (v *verifier) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		var room int64
		switch {
		case v.md5 != nil:
			room = max(v.size-v.pos, 1)
		case v.block == 0:
			room = 256 << 10
		default:
			if len(v.buf) == 0 {
				v.bufAt = v.pos
			}
			room = (v.pos/v.block+1)*v.block - v.pos
		}
		if v.block == 0 && v.md5 == nil {
			v.buf = v.buf[:0]
		}
		at := len(v.buf)
		if need := at + int(room); cap(v.buf) < need {
			v.buf = append(v.buf[:cap(v.buf)], make([]byte, need-cap(v.buf))...)
		}
		n, err := r.Read(v.buf[at : at+int(room)])
		v.buf = v.buf[:at+n]
		total += int64(n)
		switch {
		case n == 0:
		case v.md5 != nil:
			v.md5.Write(v.buf[at : at+n])
			v.pos += int64(n)
		case v.block == 0:
			if werr := v.forward(v.buf[at:at+n], v.pos); werr != nil {
				return total, werr
			}
			v.pos += int64(n)
		default:
			v.pos += int64(n)
			if k := (v.pos - 1) / v.block; v.pos == (k+1)*v.block {
				if cerr := v.checkBlock(k); cerr != nil {
					return total, cerr
				}
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// checkBlock verifies the block in buf (block k) and forwards it. Only a
// whole block can be checked; a part of one (a range that was not widened
// to whole blocks) goes through unchecked.
func (v *verifier) checkBlock(k int64) error {
	defer func() { v.buf = v.buf[:0] }()
	whole := min(v.block, v.size-k*v.block)
	if v.bufAt == k*v.block && int64(len(v.buf)) == whole && k < int64(len(v.crcs)) {
		if got := crc32.Checksum(v.buf, castagnoli); got != v.crcs[k] {
			return fmt.Errorf("%w: %s, block %d (bytes %d-%d): CRC-32C %08x, recorded %08x",
				ErrCorrupt, v.name, k, v.bufAt, v.bufAt+int64(len(v.buf))-1, got, v.crcs[k])
		}
	}
	return v.forward(v.buf, v.bufAt)
}

// finish checks what is held back at the end of the body.
func (v *verifier) finish() error {
	if v.md5 != nil {
		if got := hex.EncodeToString(v.md5.Sum(nil)); got != v.want {
			return fmt.Errorf("%w: %s: MD5 %s, its manifest records %s", ErrCorrupt, v.name, got, v.want)
		}
		return v.forward(v.buf, 0)
	}
	if len(v.buf) > 0 { // the object's last block, shorter than the others
		return v.checkBlock(v.bufAt / v.block)
	}
	return nil
}

// forward writes the part of p (object offset at) that lies in [off, end).
func (v *verifier) forward(p []byte, at int64) error {
	lo := max(v.off, at)
	hi := min(v.end, at+int64(len(p)))
	if lo >= hi {
		return nil
	}
	n, err := v.w.Write(p[lo-at : hi-at])
	v.passed += int64(n)
	return err
}

func newMD5() hash.Hash { return md5.New() }

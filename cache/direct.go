package cache

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directWriter writes a whole-image file with O_DIRECT where the
// filesystem allows it: the assembly writes every byte of an image once
// more, and on the lab's ext4 a buffered write of 1 GiB costs the writer
// ~2.8 CPU seconds (page cache allocation, dirty accounting) against ~0.25
// with O_DIRECT (test/bench/READ.md). Full blocks (aligned, in an aligned
// buffer) go direct; the last, short block and everything after a refused
// direct write go through the page cache as before.
type directWriter struct {
	f      *os.File
	direct bool
	buf    []byte // aligned, one block
}

const directAlign = 4096

func newDirectWriter(f *os.File, blockSize int64) *directWriter {
	w := &directWriter{f: f}
	if blockSize%directAlign != 0 {
		return w
	}
	w.direct = w.setDirect(true)
	if w.direct {
		raw := make([]byte, blockSize+directAlign)
		skip := int((directAlign - uintptr(unsafe.Pointer(&raw[0]))%directAlign) % directAlign)
		w.buf = raw[skip : skip+int(blockSize)]
	}
	return w
}

// setDirect sets or clears O_DIRECT on the file; false if it could not.
func (w *directWriter) setDirect(on bool) bool {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			return
		}
		if on {
			fl |= unix.O_DIRECT
		} else {
			fl &^= unix.O_DIRECT
		}
		_, err = unix.FcntlInt(fd, unix.F_SETFL, fl)
		ok = err == nil
	})
	return ok
}

// write appends one block's data (the file's offset stays aligned while
// every block but the last is full).
func (w *directWriter) write(data []byte) error {
	if w.direct && len(data) == len(w.buf) {
		copy(w.buf, data)
		_, err := w.f.Write(w.buf)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		// Refused (a filesystem without O_DIRECT for this file): the page
		// cache from here on. A refused write wrote nothing.
	}
	if w.direct {
		w.direct = false
		if !w.setDirect(false) {
			return errors.New("cannot clear O_DIRECT on the whole-image file")
		}
	}
	_, err := w.f.Write(data)
	return err
}

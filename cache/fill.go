package cache

import "io"

// fetchWriter receives a fetch's bytes, in order, into its blocks'
// buffers (allocated, or reused, as it gets to each), lets partial waiters
// have theirs as they come, and publishes each block when it is full.
type fetchWriter struct {
	b    *Blocks
	fe   *fetch
	i    int // block being filled
	buf  []byte
	fill int64 // bytes of buf filled (from the block's start)
	// head is the first block's buffer when the fetch began inside it:
	// published after its head is fetched. headOnly marks the writer of
	// that head, which fills buf[:from] and publishes nothing.
	head     []byte
	headOnly bool
}

func (w *fetchWriter) next() bool {
	if w.headOnly {
		return w.fill < w.fe.from
	}
	if w.buf != nil {
		return true
	}
	if w.i >= len(w.fe.blocks) {
		return false
	}
	if w.i > 0 {
		w.fill = 0
	}
	pd := w.fe.all[w.i] // also when cancelled: the body may still come
	w.b.mu.Lock()
	w.b.allocLocked(pd.buf, pd.size)
	w.buf = pd.buf.data
	w.b.mu.Unlock()
	return true
}

// room is the part of buf the next bytes go to.
func (w *fetchWriter) room() []byte {
	if w.headOnly {
		return w.buf[w.fill:w.fe.from]
	}
	return w.buf[w.fill:]
}

// advance records n more bytes: partial waiters that have theirs are
// woken, a full block is published.
func (w *fetchWriter) advance(n int) {
	w.fill += int64(n)
	if w.headOnly || n == 0 {
		return
	}
	b := w.b
	b.mu.Lock()
	if pd := w.fe.blocks[w.i]; pd != nil {
		pd.got = w.fill - pd.from
		keep := pd.partial[:0]
		for _, pw := range pd.partial {
			if pw.end <= w.fill {
				close(pw.ch)
			} else {
				keep = append(keep, pw)
			}
		}
		pd.partial = keep
	}
	b.mu.Unlock()
	if w.fill == int64(len(w.buf)) {
		if w.i == 0 && w.fe.from > 0 {
			w.head = w.buf // published once its head is in
		} else {
			b.publish(w.fe, w.i)
		}
		w.i++
		w.buf = nil
	}
}

// Write implements io.Writer.
func (w *fetchWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if !w.next() {
			return n, io.ErrShortWrite
		}
		c := copy(w.room(), p[n:])
		n += c
		w.advance(c)
	}
	return n, nil
}

// ReadFrom reads straight into the block buffers.
func (w *fetchWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for w.next() {
		n, err := r.Read(w.room())
		total += int64(n)
		w.advance(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

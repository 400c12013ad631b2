package fs

import (
	"context"
	"errors"
	"io"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// readHandle reads one version of a file.
type readHandle struct {
	f *fileNode
	r *segments.Reader
}

var _ fusefs.FileReader = (*readHandle)(nil)

func (h *readHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.r.ReadAt(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.f.root.errnoOf("read", h.f.rel, err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

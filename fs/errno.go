package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"github.com/imagefs/imagefs/segments"
)

// toErrno maps an error to the errno the kernel gets. It is the only place
// that does, and it logs the original error once (not ENOENT, which is an
// answer, not a failure).
func toErrno(log *slog.Logger, op, path string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		// already an errno (from this package)
	case errors.Is(err, segments.ErrStale):
		// Before ErrNotFound: a segment of the opened version that is gone
		// is both, and the reader must learn that its version went stale.
		e = syscall.ESTALE
	case errors.Is(err, segments.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, segments.ErrNonSequential):
		e = syscall.ESPIPE
	case errors.Is(err, segments.ErrNotReopenable):
		return syscall.EOPNOTSUPP // Container.Reopen logged why
	case errors.Is(err, segments.ErrNoSpace):
		e = syscall.ENOSPC
	case errors.Is(err, segments.ErrAuth):
		e = syscall.EACCES
	case errors.Is(err, context.Canceled):
		e = syscall.EINTR
	default:
		e = syscall.EIO
	}
	if e != syscall.EINTR {
		log.Error("operation failed", "op", op, "path", path, "errno", e.Error(), "err", err)
	}
	return e
}

package fs

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
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
		if writeOps[op] && forbidden(err) {
			// A read-only ACL (the container shared with this user by
			// X-Container-Read): reads work, every change fails, late.
			log.Error("Swift refused to store a change (403 Forbidden): this user may read the container but not write to it; "+
				"mount it with --read-only, or get write access (an operator role on the project, or the container's write ACL)",
				"op", op, "path", path, "errno", e.Error(), "err", err)
			return e
		}
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

// writeOps are the operations that change objects in Swift.
var writeOps = map[string]bool{"write": true, "close": true, "fsync": true, "truncate": true,
	"mkdir": true, "rmdir": true, "unlink": true, "rename": true}

// forbidden reports whether Swift answered 403 (not a 401 that
// re-authentication did not cure).
func forbidden(err error) bool {
	var se *segments.StatusError
	return errors.As(err, &se) && se.Code == http.StatusForbidden
}

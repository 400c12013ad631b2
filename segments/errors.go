package segments

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"
)

// Sentinel errors. Callers test them with errors.Is; fs maps them to errno.
var (
	// ErrNotFound: the object or container does not exist.
	ErrNotFound = errors.New("not found")
	// ErrStale: the object changed (or its segments vanished) after it was opened.
	ErrStale = errors.New("object changed since it was opened")
	// ErrNonSequential: a write went back into data that was already uploaded.
	ErrNonSequential = errors.New("write before data already uploaded")
	// ErrAuth: Swift refused the credentials (401 after re-authentication, or 403).
	ErrAuth = errors.New("not authorised")
	// ErrCommitted: a write arrived after the file was committed.
	ErrCommitted = errors.New("file already committed")
	// ErrBadAnswer: Swift answered something that breaks its own rules (a
	// HEAD without Content-Length, a manifest entry that is not
	// /container/object, a listing that does not advance). It is not
	// retried: asking again gets the same answer.
	ErrBadAnswer = errors.New("bad answer from Swift")
)

// BadAnswerError is an answer of Swift that imagefs refuses to use.
type BadAnswerError struct {
	Op      string // "HEAD", "GET-MANIFEST", "LIST", ...
	Object  string // container/object, or the container of a listing
	Problem string // what is wrong with the answer
}

func (e *BadAnswerError) Error() string {
	return fmt.Sprintf("%s %s: %v: %s", e.Op, e.Object, ErrBadAnswer, e.Problem)
}

// Unwrap makes errors.Is(err, ErrBadAnswer) true.
func (e *BadAnswerError) Unwrap() error { return ErrBadAnswer }

// StatusError is an HTTP error answer from Swift.
type StatusError struct {
	Op         string        // "PUT", "GET", ...
	Object     string        // container/object
	Code       int           // HTTP status
	RetryAfter time.Duration // from Retry-After, 0 if absent
	Body       string        // first bytes of the error body, for the log
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s %s: HTTP %d %s", e.Op, e.Object, e.Code, http.StatusText(e.Code))
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// Unwrap maps well-known codes to the package's sentinels.
func (e *StatusError) Unwrap() error {
	switch e.Code {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusPreconditionFailed:
		return ErrStale
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrAuth
	}
	return nil
}

// errShortBody: a response body ended before the announced length.
var errShortBody = errors.New("response body shorter than announced")

// errStalled: a response body sent nothing for the reader's stall timeout.
// It travels in a TransportError, so it is retried (and resumed).
var errStalled = errors.New("response body stalled")

// retryable reports whether an operation that failed with err may succeed
// when tried again, and the delay the server asked for (Retry-After).
// This is the one place that decides retry policy.
func retryable(err error) (bool, time.Duration) {
	if err == nil || errors.Is(err, context.Canceled) {
		return false, 0
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		// Trying again would not change the certificate.
		return false, 0
	}
	var se *StatusError
	if errors.As(err, &se) {
		switch {
		case se.Code >= 500, se.Code == http.StatusRequestTimeout,
			se.Code == http.StatusTooManyRequests, se.Code == 498:
			return true, se.RetryAfter
		case se.Code == http.StatusUnauthorized:
			// The Swift adapter already re-authenticated once; a second
			// 401 usually means the keeper just renewed under us.
			return true, 0
		}
		return false, 0
	}
	if errors.Is(err, errShortBody) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true, 0
	}
	var te *TransportError
	var ne net.Error
	return errors.As(err, &te) || errors.As(err, &ne), 0
}

// RetryCause names the cause of a retryable error for metrics: the HTTP
// status ("503", "401"), "timeout", "short_body", "stalled" or
// "connection" (refused, reset, any other failure below HTTP).
func RetryCause(err error) string {
	var se *StatusError
	switch {
	case errors.As(err, &se):
		return strconv.Itoa(se.Code)
	case errors.Is(err, errStalled):
		return "stalled"
	case errors.Is(err, errShortBody), errors.Is(err, io.ErrUnexpectedEOF):
		return "short_body"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "connection"
}

// TransportError is a failure below HTTP: refused or reset connections,
// timeouts, bodies cut short. It is always worth retrying.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

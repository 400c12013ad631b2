package segments

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

func TestRetryable(t *testing.T) {
	// A real certificate failure: a TLS server whose CA the client does
	// not know.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	_, tlsErr := http.Get(srv.URL)
	if tlsErr == nil {
		t.Fatal("a client without the test CA accepted the certificate")
	}
	for _, tc := range []struct {
		name  string
		err   error
		retry bool
		after time.Duration
	}{
		{"503", &StatusError{Code: 503}, true, 0},
		{"429 with Retry-After", &StatusError{Code: 429, RetryAfter: 3 * time.Second}, true, 3 * time.Second},
		{"408", &StatusError{Code: 408}, true, 0},
		{"401", &StatusError{Code: 401}, true, 0},
		{"404", &StatusError{Code: 404}, false, 0},
		{"412", &StatusError{Code: 412}, false, 0},
		{"connection reset", fmt.Errorf("get: %w", syscall.ECONNRESET), true, 0},
		{"short body", fmt.Errorf("get: %w", errShortBody), true, 0},
		{"unexpected EOF", io.ErrUnexpectedEOF, true, 0},
		{"transport error", &TransportError{Err: errors.New("boom")}, true, 0},
		{"cancelled", context.Canceled, false, 0},
		{"certificate not trusted", &TransportError{Err: fmt.Errorf("HEAD c: %w", tlsErr)}, false, 0},
	} {
		retry, after := retryable(tc.err)
		if retry != tc.retry || after != tc.after {
			t.Errorf("%s: retryable = %v, %v; want %v, %v", tc.name, retry, after, tc.retry, tc.after)
		}
	}
}

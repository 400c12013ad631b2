package segments

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzTrace: ParseTrace accepts only traces of the version asked for,
// within their bounds and within the image, and what it accepts encodes
// to a trace it accepts again; it never panics, whatever the bytes.
func FuzzTrace(f *testing.F) {
	const key = "0123abcd"
	for _, s := range []string{
		`{"version":"0123abcd","extents":[{"o":0,"n":262144},{"o":1048576,"n":65536}]}`,
		`{"version":"0123abcd","extents":[]}`, `{"version":"other","extents":[{"o":0,"n":1}]}`,
		`{"version":"0123abcd","extents":[{"o":-1,"n":5}]}`, `{"version":"0123abcd","extents":[{"o":9223372036854775807,"n":9223372036854775807}]}`,
		`{"version":"0123abcd","extents":[{"o":0,"n":0}]}`, `null`, `[]`, `{`, ``,
		`{"version":"0123abcd","extents":[` + strings.Repeat(`{"o":0,"n":1},`, MaxTraceExtents) + `{"o":0,"n":1}]}`,
	} {
		f.Add([]byte(s), int64(8<<20))
	}
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		tr, err := ParseTrace(b, key, size)
		if err != nil {
			if !errors.Is(err, ErrBadTrace) {
				t.Fatalf("error not ErrBadTrace: %v", err)
			}
			return
		}
		if len(b) > maxTraceObject || tr.Version != key || len(tr.Extents) > MaxTraceExtents || tr.Bytes() > MaxTraceBytes {
			t.Fatalf("accepted out of bounds: %d bytes, %d extents, %d bytes named", len(b), len(tr.Extents), tr.Bytes())
		}
		for _, e := range tr.Extents {
			if e.Off < 0 || e.Len <= 0 || e.Off+e.Len > size {
				t.Fatalf("accepted extent %+v of an image of %d bytes", e, size)
			}
		}
		again, err := json.Marshal(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseTrace(again, key, size); err != nil && len(again) <= maxTraceObject {
			t.Fatalf("re-encoded trace refused: %v", err)
		}
	})
}

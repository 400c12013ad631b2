package segments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ncw/swift/v2"
)

// Answers of the lab's Swift 2.30 (test/lab), as seeds.
const (
	realManifest = `[{"name": "/probe-7807/seg a%b", "bytes": 5000, "hash": "1399cba095bece0b63a3f69d0ecce907", "content_type": "application/octet-stream", "last_modified": "2026-12-01T22:34:44.000000", "range": "10-19"}]`
	realNested   = `[{"name": "/probe-7807/slo", "bytes": 10, "hash": "034d91869d72017d304adde1a6a73aac", "content_type": "application/x-www-form-urlencoded", "last_modified": "2026-12-01T22:34:44.000000", "sub_slo": true}]`
	realListing  = `[{"bytes": 5000, "hash": "1399cba095bece0b63a3f69d0ecce907", "name": "seg a%b", "content_type": "application/octet-stream", "last_modified": "2026-12-01T22:34:34.643740"}, {"subdir": "vm/"}]`
	realInfo     = `{"swift": {"version": "2.30.1", "max_file_size": 5368709122, "max_object_name_length": 1024, "container_listing_limit": 10000}, "slo": {"max_manifest_segments": 1000, "max_manifest_size": 8388608, "yield_frequency": 10, "min_segment_size": 1, "allow_async_delete": false}, "bulk_delete": {"max_deletes_per_request": 10000, "max_failed_deletes": 1000}}`
)

// FuzzManifest: a multipart-manifest=get answer decodes into at most
// maxManifestEntries entries; accepted entries name /container/object,
// have sizes and ranges that fit, and encode back to themselves. The
// second half builds one entry from its fields.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(realManifest), "/c/o", int64(100), "0-99", false)
	f.Add([]byte(realNested), "/c/sub/o", int64(10), "", true)
	f.Add([]byte(`[]`), "c/o", int64(1), "", false)
	f.Add([]byte(`[{"name":"/c/o","bytes":-1}]`), "/c/", int64(-1), "5-4", false)
	f.Add([]byte(`[{"name":"/c/o","bytes":10,"range":"0-9223372036854775807"}]`), "//o", int64(math.MaxInt64), "0-9223372036854775807", false)
	f.Add([]byte(`[{"name":"/c/o","bytes":9223372036854775807},{"name":"/c/o","bytes":9223372036854775807}]`), "/c/o", int64(5), "-1-3", false)
	f.Add([]byte(`{"not":"an array"}`), "", int64(0), "a-b", false)
	f.Add([]byte(`[{"name":"/c/o","bytes":1}] trailing`), "/c/o", int64(1), "0-0", false)
	f.Fuzz(func(t *testing.T, data []byte, name string, size int64, rng string, sub bool) {
		raw, err := decodeManifest(bytes.NewReader(data))
		if len(raw) > maxManifestEntries {
			t.Fatalf("%d entries decoded", len(raw))
		}
		if err == nil {
			checkManifest(t, raw)
		}
		checkManifest(t, []sloGetEntry{{Name: name, Bytes: size, Range: rng, SubSLO: sub, Hash: "h"}})
	})
}

func checkManifest(t *testing.T, raw []sloGetEntry) {
	es, err := parseManifestEntries(raw)
	if err != nil {
		return
	}
	if len(es) != len(raw) {
		t.Fatalf("%d entries from %d", len(es), len(raw))
	}
	var total int64
	back := make([]sloGetEntry, len(es))
	for i, e := range es {
		if e.Container == "" || strings.Contains(e.Container, "/") || e.Object == "" || raw[i].Name != "/"+e.Container+"/"+e.Object {
			t.Fatalf("entry %q: container %q, object %q", raw[i].Name, e.Container, e.Object)
		}
		if e.Size < 0 || e.Offset < 0 || e.Length < 0 {
			t.Fatalf("entry %+v: negative field", e)
		}
		if e.Length > 0 && (e.Offset > e.Size-e.Length) {
			t.Fatalf("entry %+v: range beyond the segment", e)
		}
		if e.Bytes() > math.MaxInt64-total {
			t.Fatalf("entries overflow: %d + %d", total, e.Bytes())
		}
		total += e.Bytes()
		back[i] = sloGetEntry{Name: "/" + e.Container + "/" + e.Object, Hash: e.ETag, Bytes: e.Size, SubSLO: e.SubSLO}
		if e.Length > 0 {
			back[i].Range = fmt.Sprintf("%d-%d", e.Offset, e.Offset+e.Length-1)
		}
	}
	b, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	raw2, err := decodeManifest(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("re-encoded manifest: %v", err)
	}
	es2, err := parseManifestEntries(raw2)
	if err != nil || !reflect.DeepEqual(es, es2) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, es, es2)
	}
}

// FuzzInfo: whatever /info says, the limits are sane (no manifest of
// fewer than two entries, nothing negative or absurd); sane values are
// taken as they are, others replaced by Swift's defaults and named.
func FuzzInfo(f *testing.F) {
	f.Add([]byte(realInfo))
	f.Add([]byte(`{"slo": {"max_manifest_segments": 1}}`))
	f.Add([]byte(`{"slo": {"max_manifest_segments": 0, "max_manifest_size": -5}, "swift": {"max_file_size": 1e300}}`))
	f.Add([]byte(`{"slo": {"max_manifest_segments": "1000", "max_manifest_size": 8388608.5}, "swift": []}`))
	f.Add([]byte(`{"slo": true, "swift": null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := parseInfo(data)
		if err != nil {
			return
		}
		if l.MaxManifestSegments < 2 || l.MaxManifestSegments > maxManifestEntries ||
			l.MaxManifestSize <= 0 || l.MaxManifestSize > maxSaneManifestSize ||
			l.MaxFileSize <= 0 || l.MaxFileSize > maxSaneFileSize {
			t.Fatalf("limits out of range: %+v", l)
		}
		var info map[string]any
		_ = json.Unmarshal(data, &info)
		slo, _ := info["slo"].(map[string]any)
		sw, _ := info["swift"].(map[string]any)
		for _, c := range []struct {
			sec  map[string]any
			key  string
			got  int64
			def  int64
			sane func(float64) bool
		}{
			{slo, "max_manifest_segments", int64(l.MaxManifestSegments), int64(DefaultLimits.MaxManifestSegments), func(v float64) bool { return v >= 2 && v <= maxManifestEntries }},
			{slo, "max_manifest_size", l.MaxManifestSize, DefaultLimits.MaxManifestSize, func(v float64) bool { return v >= 1 && v <= maxSaneManifestSize }},
			{sw, "max_file_size", l.MaxFileSize, DefaultLimits.MaxFileSize, func(v float64) bool { return v >= 1 && v <= maxSaneFileSize }},
		} {
			v, present := c.sec[c.key]
			n, isNum := v.(float64)
			switch {
			case !present:
				if c.got != c.def {
					t.Errorf("%s absent: %d, want the default %d", c.key, c.got, c.def)
				}
			case isNum && n == math.Trunc(n) && c.sane(n):
				if c.got != int64(n) {
					t.Errorf("%s %v: got %d", c.key, n, c.got)
				}
			default:
				if c.got != c.def || !strings.Contains(strings.Join(l.Problems, "\n"), c.key) {
					t.Errorf("%s %v: got %d, problems %q; want the default %d and a problem", c.key, v, c.got, l.Problems, c.def)
				}
			}
		}
	})
}

// FuzzHeadInfo: a HEAD's headers give an Info with a size that is the
// Content-Length exactly (which must be there and be a size), and a DLO
// only if X-Object-Manifest parses.
func FuzzHeadInfo(f *testing.F) {
	f.Add("5000", true, "", false, `"1399cba095bece0b63a3f69d0ecce907"`, "Tue, 01 Dec 2026 22:34:44 GMT", "mtime", "1764628484")
	f.Add("10", true, "True", false, `"034d91869d72017d304adde1a6a73aac"`, "", "sha256", "")
	f.Add("0", true, "", true, "d41d8cd98f00b204e9800998ecf8427e", "", "", "")
	f.Add("", false, "", false, "", "", "", "")
	f.Add("-5", true, "", false, "", "", "", "")
	f.Add("18446744073709551615", true, "", false, "", "", "", "")
	f.Add(" 12 ", true, "", true, "", "", "", "")
	f.Fuzz(func(t *testing.T, cl string, hasCL bool, slo string, hasDLO bool, etag, lastMod, metaKey, metaVal string) {
		h := swift.Headers{"Etag": etag, "Last-Modified": lastMod, "X-Static-Large-Object": slo}
		if hasCL {
			h["Content-Length"] = cl
		}
		if hasDLO {
			h["X-Object-Manifest"] = metaVal // reuse a string: any value
		}
		if metaKey != "" {
			h["X-Object-Meta-"+metaKey] = metaVal
		}
		in, err := headInfo("c", "o", h)
		n, perr := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
		sizeOK := hasCL && perr == nil && n >= 0
		_, _, derr := parseDLOManifest(metaVal)
		dloOK := !hasDLO || derr == nil
		if (err == nil) != (sizeOK && dloOK) {
			t.Fatalf("headers %q: err %v; size ok %v, manifest ok %v", h, err, sizeOK, dloOK)
		}
		if err != nil {
			return
		}
		if in.Size != n || in.Container != "c" || in.Name != "o" || in.ETag != strings.Trim(etag, `"`) {
			t.Fatalf("headers %q: %+v", h, in)
		}
		if in.SLO != strings.EqualFold(slo, "true") || (in.DLO != "") != (hasDLO) {
			t.Fatalf("headers %q: SLO %v DLO %q", h, in.SLO, in.DLO)
		}
		if metaKey != "" && in.Meta[strings.ToLower(metaKey)] != metaVal {
			t.Fatalf("headers %q: meta %q", h, in.Meta)
		}
	})
}

// FuzzRetryAfter: any Retry-After is a pause in [0, maxRetryAfter]; a
// small number of seconds, or a date up to a minute ahead, is exact.
func FuzzRetryAfter(f *testing.F) {
	now := time.Date(2026, 12, 1, 22, 34, 44, 0, time.UTC)
	for _, s := range []string{"1", "0", "120", "-5", "9223372036854775807", "99999999999999999999999", "1.5", " 7 ", "+3",
		"Tue, 01 Dec 2026 22:35:14 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 1900 00:00:00 GMT", "Tuesday, 01-Dec-26 22:35:14 GMT", "soon"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := parseRetryAfterAt(v, now)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("Retry-After %q: %v", v, d)
		}
		s := strings.TrimSpace(v)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && strings.Trim(s, "0123456789") == "" && n <= 60 && d != time.Duration(n)*time.Second {
			t.Fatalf("Retry-After %q: %v, want %d s", v, d, n)
		}
		if tm, err := http.ParseTime(s); err == nil {
			if want := tm.Sub(now); want >= 0 && want <= maxRetryAfter && d != want {
				t.Fatalf("Retry-After %q: %v, want %v", v, d, want)
			}
		}
	})
}

// FuzzListing: a listing page gives entries with names under the prefix,
// sizes that are not negative, and encodes back to the same entries.
func FuzzListing(f *testing.F) {
	f.Add([]byte(realListing), "")
	f.Add([]byte(`[{"subdir": "vm/a/"}, {"name": "vm/b", "bytes": 3, "last_modified": "2026-12-01T22:34:34Z"}]`), "vm/")
	f.Add([]byte(`[]`), "x")
	f.Add([]byte(`[{"name": "a", "bytes": -1}]`), "")
	f.Add([]byte(`[{"name": "", "subdir": ""}]`), "")
	f.Add([]byte(`[{"name": "zz", "last_modified": "yesterday"}]`), "z")
	f.Add([]byte(`[{"name": "b"}, {"name": "a"}]`), "")
	f.Add([]byte(`[{"bytes": 4, "hash": "7b814907e550dc35f41bec75996893b5", "name": "big", "slo_etag": "\"12949e83a49a0989aa46ab7e249ca34d\""}]`), "")
	f.Fuzz(func(t *testing.T, data []byte, prefix string) {
		page, err := parseListing(bytes.NewReader(data), "c", prefix)
		if err != nil {
			return
		}
		type entry struct {
			Name         string `json:"name,omitempty"`
			Subdir       string `json:"subdir,omitempty"`
			Bytes        int64  `json:"bytes"`
			Hash         string `json:"hash"`
			ContentType  string `json:"content_type"`
			LastModified string `json:"last_modified,omitempty"`
			SLOEtag      string `json:"slo_etag,omitempty"`
		}
		back := make([]entry, len(page))
		for i, in := range page {
			if in.Name == "" || !strings.HasPrefix(in.Name, prefix) || in.Size < 0 || in.Container != "c" {
				t.Fatalf("entry %+v (prefix %q)", in, prefix)
			}
			if in.Subdir {
				back[i] = entry{Subdir: in.Name}
				continue
			}
			back[i] = entry{Name: in.Name, Bytes: in.Size, Hash: in.ETag, ContentType: in.ContentType, SLOEtag: in.ListedSLOETag}
			if !in.LastModified.IsZero() {
				back[i].LastModified = in.LastModified.Format("2006-01-02T15:04:05.000000")
			}
		}
		b, err := json.Marshal(back)
		if err != nil {
			t.Fatal(err)
		}
		page2, err := parseListing(bytes.NewReader(b), "c", prefix)
		if err != nil || !reflect.DeepEqual(page, page2) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, page, page2)
		}
	})
}

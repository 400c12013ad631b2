package labtest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"
)

// TarFile is one object for ExtractArchive: name (below the container)
// and size; its bytes are the name repeated.
type TarFile struct {
	Name string
	Size int
}

// ExtractArchive creates the objects files in container c with Swift's
// bulk middleware (PUT ?extract-archive=tar), in tars of at most 200
// objects, 8 at a time (Swift extracts each tar one object after the
// other). A tar whose token expired during its extraction (the lab's
// live two minutes) is sent again with a fresh one.
func ExtractArchive(t testing.TB, c string, files []TarFile) {
	t.Helper()
	const perTar = 200
	g, ctx := errgroup.WithContext(t.Context())
	g.SetLimit(8)
	for start := 0; start < len(files); start += perTar {
		chunk := files[start:min(start+perTar, len(files))]
		g.Go(func() error {
			var err error
			for range 3 {
				if err = extract(ctx, c, chunk); err == nil || !errors.Is(err, errExpired) {
					return err
				}
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("extract-archive into %s: %v", c, err)
	}
}

// errExpired: the token expired while Swift extracted a tar.
var errExpired = errors.New("the token expired during the extraction")

func extract(ctx context.Context, c string, files []TarFile) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		data := bytes.Repeat([]byte(f.Name), f.Size/max(len(f.Name), 1)+1)[:f.Size]
		if err := tw.WriteHeader(&tar.Header{Name: f.Name, Mode: 0o644, Size: int64(f.Size), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	cred := Keeper.Current()
	u := cred.StorageURL + "/" + url.PathEscape(c) + "?extract-archive=tar"
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", string(cred.Token))
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	// The bulk middleware answers 200 at once and reports the outcome in
	// the body (it streams it while it works).
	var res struct {
		Created int        `json:"Number Files Created"`
		Status  string     `json:"Response Status"`
		Errors  [][]string `json:"Errors"`
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("PUT ?extract-archive: %s: %.300s", resp.Status, body)
	}
	if err := json.Unmarshal(bytes.TrimSpace(body), &res); err != nil {
		return fmt.Errorf("PUT ?extract-archive: answer %.300q: %v", body, err)
	}
	if strings.HasPrefix(res.Status, "401") {
		return fmt.Errorf("PUT ?extract-archive: %d of %d objects created: %w", res.Created, len(files), errExpired)
	}
	if res.Created != len(files) || !strings.HasPrefix(res.Status, "201") {
		return fmt.Errorf("PUT ?extract-archive: %d of %d objects created, %s, errors %v", res.Created, len(files), res.Status, res.Errors)
	}
	return nil
}

var requestLine = regexp.MustCompile(`(?m)^imagefs_swift_requests_total\{([^}]*)\} ([0-9.e+]+)$`)
var methodLabel = regexp.MustCompile(`method="([A-Z]+)"`)

// SwiftRequests scrapes a mount's --metrics-addr and returns the number
// of Swift requests it sent so far, by method (whatever their answer).
func SwiftRequests(t testing.TB, addr string) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v", addr, resp.Status, err)
	}
	out := map[string]int{}
	for _, m := range requestLine.FindAllStringSubmatch(string(b), -1) {
		meth := methodLabel.FindStringSubmatch(m[1])
		v, err := strconv.ParseFloat(m[2], 64)
		if meth == nil || err != nil {
			t.Fatalf("scrape %s: cannot read %q", addr, m[0])
		}
		out[meth[1]] += int(v)
	}
	return out
}

// Delta is what the counts in after add to before, by method.
func Delta(before, after map[string]int) map[string]int {
	d := map[string]int{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}

package auth

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A token document as the lab's Keystone sends it (trimmed catalog), as seed.
const realToken = `{"token": {"methods": ["password"], "user": {"domain": {"id": "default", "name": "Default"}, "id": "4f1b6b5c0e7d4d0f9f1c2a3b4c5d6e7f", "name": "demo", "password_expires_at": null},
 "audit_ids": ["lhP5VC1xQAS2BLVI1ChJ3w"], "expires_at": "2026-12-01T22:36:44.000000Z", "issued_at": "2026-12-01T22:34:44.000000Z",
 "project": {"domain": {"id": "default", "name": "Default"}, "id": "19e2fd461dc041b2b2fc25bb21aac4ce", "name": "demo"}, "is_domain": false,
 "roles": [{"id": "a1", "name": "member"}, {"id": "a2", "name": "reader"}], "catalog": []}}`

// FuzzTokenBody: whatever Keystone sends, reading the token either fails
// or gives a token that expires after it was issued, within
// maxTokenLifetime, so the keeper's schedule is sane; a Keystone time in
// any of its formats parses to the instant it names. The second half
// builds a document from the two times.
func FuzzTokenBody(f *testing.F) {
	f.Add([]byte(realToken), "2026-12-01T22:34:44.000000Z", "2026-12-01T23:34:44.000000Z")
	f.Add([]byte(`{"token": {"expires_at": "2026-11-23T19:22:57.000000"}}`), "", "2026-11-23T19:22:57")
	f.Add([]byte(`{"token": {"issued_at": "2026-12-01T22:34:44Z"}}`), "2026-12-01T22:34:44Z", "")
	f.Add([]byte(`{"token": {"issued_at": "2026-12-01T22:34:44Z", "expires_at": "2026-12-01T22:34:43Z"}}`), "2026-12-01T22:34:44Z", "2026-12-01T22:34:44Z")
	f.Add([]byte(`{"token": {"issued_at": "2026-12-01T22:34:44Z", "expires_at": "9999-12-31T23:59:59Z"}}`), "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z")
	f.Add([]byte(`{"token": {"expires_at": 1764628484}}`), "null", "yesterday")
	f.Add([]byte(`{"token": {"expires_at": null, "roles": "member"}}`), "2026-12-01T22:34:44+14:00", "2026-12-01T22:34:44-12:00")
	now := time.Date(2026, 12, 1, 22, 34, 44, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte, issued, expires string) {
		checkToken(t, data, now)
		doc := map[string]map[string]any{"token": {}}
		for k, v := range map[string]string{"issued_at": issued, "expires_at": expires} {
			if v != "" {
				doc["token"][k] = v
			}
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		checkToken(t, b, now)
		for _, s := range []string{issued, expires} {
			var kt ksTime
			q, _ := json.Marshal(s)
			if kt.UnmarshalJSON(q) != nil || kt.IsZero() {
				continue
			}
			if kt.Location() != time.UTC {
				t.Fatalf("%q: %v is not UTC", s, kt.Time)
			}
			var back ksTime
			q, _ = json.Marshal(kt.Format(time.RFC3339Nano))
			if err := back.UnmarshalJSON(q); err != nil || !back.Equal(kt.Time) {
				t.Fatalf("%q: %v, again %v (%v)", s, kt.Time, back.Time, err)
			}
		}
	})
}

// checkToken reads a token document as keystone.read does.
func checkToken(t *testing.T, data []byte, now time.Time) {
	var doc struct {
		Token tokenBody `json:"token"`
	}
	if json.Unmarshal(data, &doc) != nil {
		return
	}
	tok := &token{sent: now}
	err := doc.Token.fill(tok, now)
	if err != nil {
		if !strings.Contains(err.Error(), errBadAnswer.Error()) {
			t.Fatalf("%s: error %v does not say the answer is bad", data, err)
		}
		return
	}
	l := tok.lifetime()
	switch {
	case tok.expiresAt.IsZero():
		t.Fatalf("%s: no expiry", data)
	case !tok.issuedAt.IsZero() && (l <= 0 || l > maxTokenLifetime):
		t.Fatalf("%s: lifetime %v", data, l)
	case tok.issuedAt.IsZero() && tok.expiresAt.Sub(now) > maxTokenLifetime:
		t.Fatalf("%s: expires %v", data, tok.expiresAt)
	}
	if l > 0 {
		c := credential(tok)
		if !c.Expires.After(c.Issued) || renewMargin(l, 5*time.Minute) < 0 {
			t.Fatalf("%s: credential %+v", data, c)
		}
	}
}

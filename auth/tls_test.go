package auth

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTLSOptionsConfig(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}

	if c, err := (TLSOptions{}).Config(); c != nil || err != nil {
		t.Errorf("no options: got %v, %v; want nil, nil (Go's defaults)", c, err)
	}
	for _, tc := range []struct {
		o    TLSOptions
		want string
	}{
		{TLSOptions{CACert: filepath.Join(dir, "missing.pem")}, "OS_CACERT (--os-cacert): open "},
		{TLSOptions{CACert: notPEM}, "no PEM certificate in it"},
		{TLSOptions{Cert: ca}, "OS_CERT and OS_KEY (--os-cert, --os-key) go together"},
		{TLSOptions{Key: ca}, "OS_CERT and OS_KEY (--os-cert, --os-key) go together"},
		{TLSOptions{Cert: ca, Key: notPEM}, "OS_CERT/OS_KEY (--os-cert/--os-key): "},
	} {
		if _, err := tc.o.Config(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.o, err, tc.want)
		}
	}

	// Without the CA the handshake fails, and the error says what to do.
	_, err := http.Get(srv.URL)
	if err == nil {
		t.Fatal("the test server's certificate was accepted without its CA")
	}
	if h := TLSProblem(err); !strings.Contains(h, "set OS_CACERT") {
		t.Errorf("TLSProblem(%v) = %q", err, h)
	}
	if h := TLSProblem(context.DeadlineExceeded); h != "" {
		t.Errorf("TLSProblem of a timeout = %q, want none", h)
	}
	// With it, requests go through.
	c, err := TLSOptions{CACert: ca}.Config()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: c}}).Get(srv.URL)
	if err != nil {
		t.Fatalf("with OS_CACERT: %v", err)
	}
	resp.Body.Close()
	if c, _ := (TLSOptions{Insecure: true}).Config(); c == nil || !c.InsecureSkipVerify {
		t.Errorf("Insecure: got %+v", c)
	}
}

// TestKeystoneOverTLS: the keeper's Keystone requests use Config.TLS, and
// a certificate from an unknown CA gives an error that says what to do.
func TestKeystoneOverTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	cfg := Config{AuthURL: srv.URL + "/v3", Timeout: 5 * time.Second,
		Identity: Identity{Username: "u", Password: "p", UserDomainName: "Default", ProjectName: "p", ProjectDomainName: "Default"}}
	_, err := New(t.Context(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority: the server's TLS certificate is signed by a CA this machine does not trust: set OS_CACERT") {
		t.Fatalf("without the CA: %v", err)
	}
	cfg.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
	_, err = New(t.Context(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "answered 404") {
		t.Fatalf("with the CA, want Keystone's 404 (the handshake worked): %v", err)
	}
}

//go:build integration

package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagefs/imagefs/test/labtest"
)

// testCA is a private CA with one server certificate for 127.0.0.1.
type testCA struct {
	pemFile string // the CA's certificate, PEM
	server  tls.Certificate
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, srvKey := key(), key()
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imagefs test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca := testCA{pemFile: filepath.Join(t.TempDir(), "ca.pem"),
		server: tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}
	if err := os.WriteFile(ca.pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// tlsProxy serves HTTPS with the CA's server certificate and passes the
// requests on to the plain HTTP server of target, counting them.
func (ca testCA) tlsProxy(t *testing.T, target string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		rp.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.server}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestTLSWithPrivateCA: Keystone and Swift behind HTTPS with a private CA
// (the usual production set-up), which the operator names with OS_CACERT,
// the OpenStack CLI's variable; and the clear errors when it is missing or
// wrong.
func TestTLSWithPrivateCA(t *testing.T) {
	c := labtest.NewContainer(t)
	ca := newTestCA(t)
	ks, ksReqs := ca.tlsProxy(t, os.Getenv("OS_AUTH_URL"))
	plainSwift := labtest.Keeper.Current().StorageURL // http://127.0.0.1:8080/v1/AUTH_<project>
	sw, swReqs := ca.tlsProxy(t, plainSwift)
	su, _ := url.Parse(plainSwift)
	authURL := ks.URL + "/v3"
	storageURL := sw.URL + su.Path
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The errors first: nothing may get mounted.
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"Keystone's CA not trusted", []string{"OS_AUTH_URL=" + authURL},
			"x509: certificate signed by unknown authority: the server's TLS certificate is signed by a CA this machine does not trust: set OS_CACERT (--os-cacert)"},
		{"Swift's CA not trusted", []string{"OS_STORAGE_URL=" + storageURL},
			"cannot reach container"},
		{"CA file missing", []string{"OS_AUTH_URL=" + authURL, "OS_CACERT=/nonexistent/ca.pem"},
			"OS_CACERT (--os-cacert): open /nonexistent/ca.pem: no such file or directory"},
		{"CA file not PEM", []string{"OS_AUTH_URL=" + authURL, "OS_CACERT=" + notPEM},
			"OS_CACERT (--os-cacert) " + notPEM + ": no PEM certificate in it"},
		{"client certificate without its key", []string{"OS_AUTH_URL=" + authURL, "OS_CACERT=" + ca.pemFile, "OS_CERT=" + ca.pemFile},
			"OS_CERT and OS_KEY (--os-cert, --os-key) go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := labtest.MountFails(t, tc.env, []string{c, dir}, 1, tc.want)
			if tc.name == "Swift's CA not trusted" && !strings.Contains(out, "set OS_CACERT") {
				t.Errorf("the Swift error does not say to set OS_CACERT: %s", out)
			}
			if labtest.Mounted(dir) {
				t.Error("something got mounted")
			}
		})
	}

	// With OS_CACERT, everything goes over TLS and works.
	ks0, sw0 := ksReqs.Load(), swReqs.Load()
	d := labtest.Mount(t, c, labtest.MountOpts{Env: []string{"OS_AUTH_URL=" + authURL, "OS_STORAGE_URL=" + storageURL, "OS_CACERT=" + ca.pemFile}})
	src, sum := labtest.RandomFile(t, 40<<20, 11)
	labtest.RunCmd(t, "cp", src, d.Path("disk.raw"))
	if got := labtest.SHA256File(t, d.Path("disk.raw")); got != sum {
		t.Fatalf("sha256 through the TLS mount %s, want %s", got, sum)
	}
	if got := labtest.SwiftDownloadSHA256(t, c, "disk.raw"); got != sum {
		t.Fatalf("sha256 in Swift %s, want %s", got, sum)
	}
	if ksReqs.Load() == ks0 || swReqs.Load()-sw0 < 3 {
		t.Fatalf("requests over TLS: Keystone %d, Swift %d: the mount did not use the TLS endpoints", ksReqs.Load()-ks0, swReqs.Load()-sw0)
	}
	d.Stop()

	// --insecure (OS_INSECURE) works without the CA, with a warning.
	d = labtest.Mount(t, c, labtest.MountOpts{Env: []string{"OS_AUTH_URL=" + authURL, "OS_STORAGE_URL=" + storageURL, "OS_INSECURE=true"}})
	got, err := os.ReadFile(d.Path("disk.raw"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	if !bytes.Equal(got, want) {
		t.Fatal("the file read with --insecure differs")
	}
	d.Stop()
	if !strings.Contains(d.LogText(), "TLS certificates of Keystone and Swift are not verified") {
		t.Errorf("no warning about --insecure in the log:\n%s", d.LogText())
	}
}

package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSOptions are the TLS settings of the OpenStack tools: OS_CACERT,
// OS_CERT, OS_KEY and OS_INSECURE (clouds.yaml: cacert, cert, key, verify).
// They apply to Keystone and to Swift alike.
type TLSOptions struct {
	// CACert is a PEM bundle of the CAs to trust instead of the system's
	// (as python-requests and gophercloud do with OS_CACERT).
	CACert string
	// Cert and Key are a client certificate and its key (PEM), for
	// endpoints that require one.
	Cert, Key string
	// Insecure skips the verification of the servers' certificates.
	Insecure bool
}

// Config builds the tls.Config of o, or nil when o sets nothing (Go's
// defaults: the system's CAs). A file that cannot be read or holds no
// certificate is an error that names the setting.
func (o TLSOptions) Config() (*tls.Config, error) {
	if o == (TLSOptions{}) {
		return nil, nil
	}
	c := &tls.Config{InsecureSkipVerify: o.Insecure}
	if o.CACert != "" {
		b, err := os.ReadFile(o.CACert)
		if err != nil {
			return nil, fmt.Errorf("OS_CACERT (--os-cacert): %v", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("OS_CACERT (--os-cacert) %s: no PEM certificate in it: give the CA bundle (-----BEGIN CERTIFICATE-----) that signed Keystone's and Swift's certificates", o.CACert)
		}
	}
	switch {
	case o.Cert != "" && o.Key != "":
		cert, err := tls.LoadX509KeyPair(o.Cert, o.Key)
		if err != nil {
			return nil, fmt.Errorf("OS_CERT/OS_KEY (--os-cert/--os-key): %v", err)
		}
		c.Certificates = []tls.Certificate{cert}
	case o.Cert != "" || o.Key != "":
		return nil, errors.New("OS_CERT and OS_KEY (--os-cert, --os-key) go together: a client certificate needs its key")
	}
	return c, nil
}

// TLSProblem explains an error that is a server certificate the client
// did not accept, with what to do about it, or returns "".
func TLSProblem(err error) string {
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return "the server's TLS certificate is signed by a CA this machine does not trust: set OS_CACERT (--os-cacert) to that CA's PEM bundle, or add the CA to the system's trust store"
	case errors.As(err, &he):
		return "the server's TLS certificate is not for the host name in the URL: use a host name the certificate names"
	case errors.As(err, &cve):
		return "the server's TLS certificate was not accepted (expired, or not valid for a server?)"
	}
	return ""
}

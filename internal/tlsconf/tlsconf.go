// Package tlsconf builds a *tls.Config from the file-based TLS options every
// Herald client shares (Kafka, ClickHouse): a CA bundle to trust, a client
// certificate and key for mutual TLS, the server name to verify.
//
// Errors name the option at fault with the prefix given to Config (for
// example "kafka.tls.ca-file"), so a misconfigured deployment says which key
// to fix. Key material is never part of an error or a log line.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Files are the TLS options of one client.
type Files struct {
	// Enabled turns TLS on. Setting CAFile or CertFile turns it on too.
	// Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the certificate authorities to trust
	// instead of the system roots. Default "": the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the PEM client certificate and its key, for
	// servers that require mutual TLS. Both or neither. Default "".
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name verified in the server's certificate.
	// Default "": the host the client dials.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate. For tests only:
	// it defeats TLS against an active attacker. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// On reports whether TLS is to be used.
func (f Files) On() bool { return f.Enabled || f.CAFile != "" || f.CertFile != "" }

// Config returns the tls.Config the options describe, or nil when TLS is
// off. prefix names the options in errors ("kafka.tls" gives
// "kafka.tls.ca-file: ...").
func (f Files) Config(prefix string) (*tls.Config, error) {
	if !f.On() {
		if f.KeyFile != "" {
			return nil, fmt.Errorf("%s.key-file is set without %s.cert-file", prefix, prefix)
		}
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName, InsecureSkipVerify: f.InsecureSkipVerify} //nolint:gosec // opt-in, documented as test-only
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca-file: reading: %w", prefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca-file: %s holds no PEM certificate", prefix, f.CAFile)
		}
		c.RootCAs = pool
	}
	switch {
	case f.CertFile != "" && f.KeyFile == "":
		return nil, fmt.Errorf("%s.key-file is required with %s.cert-file", prefix, prefix)
	case f.CertFile == "" && f.KeyFile != "":
		return nil, fmt.Errorf("%s.cert-file is required with %s.key-file", prefix, prefix)
	case f.CertFile != "":
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			// LoadX509KeyPair's errors describe the PEM blocks, never the key.
			return nil, fmt.Errorf("%s.cert-file/%s.key-file: loading the key pair: %w", prefix, prefix, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInterpolate(t *testing.T) {
	t.Setenv("HERALD_T_SET", "kafka-1:9092")
	t.Setenv("HERALD_T_EMPTY", "")
	f := func(in, want string) {
		t.Helper()
		got, err := interpolate(in)
		if err != nil {
			t.Fatalf("interpolate(%q): %v", in, err)
		}
		if got != want {
			t.Errorf("interpolate(%q) = %q, want %q", in, got, want)
		}
	}
	f("plain", "plain")
	f("${HERALD_T_SET}", "kafka-1:9092")
	f("${HERALD_T_SET:ignored}", "kafka-1:9092")
	f("${HERALD_T_UNSET:redpanda:9092}", "redpanda:9092") // the default may hold colons
	f("${HERALD_T_EMPTY:fallback}", "fallback")
	f("${HERALD_T_UNSET:}", "")
	f("a,${HERALD_T_SET},b", "a,kafka-1:9092,b")
	f("$${HERALD_T_SET}", "${HERALD_T_SET}")
	f("cost $5", "cost $5")

	fail := func(in, wantErr string) {
		t.Helper()
		_, err := interpolate(in)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("interpolate(%q): err = %v, want it to contain %q", in, err, wantErr)
		}
	}
	fail("${HERALD_T_UNSET}", "HERALD_T_UNSET is not set and has no default")
	fail("${HERALD_T_EMPTY}", "HERALD_T_EMPTY is not set")
	fail("${HERALD_T_SET", "unterminated")
	fail("${1BAD:x}", `"1BAD" is not an environment variable name`)
}

// TestConfigPrecedence: flag > env > file section > file top level >
// default, nested and flat keys, snake and kebab case, interpolation.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HERALD_T_BROKERS", "k1:9092,k2:9092")
	path := writeFile(t, dir, "herald.yaml", `
kafka:
  brokers: ${HERALD_T_BROKERS}
  partitions: 12
  commit_interval: 2s
  session_timeout: 10s
  tls: {enabled: true}
ops.addr: file:9100
http.addr: top:8080
ingest:
  http: {addr: section:8080}
  max_body: 2048            # -ingest.max-body, the section prefix left out
  ingest.produce-timeout: 3s
segmenter:
  http.addr: seg:8081       # another command's section: ignored by ingest
`)
	t.Setenv("HERALD_OPS_ADDR", "env:9100")
	t.Setenv("HERALD_KAFKA_PARTITIONS", "16")
	c := newIngestCmd(&bytes.Buffer{})
	if err := c.flagSet().parse([]string{"-config", path, "-kafka.partitions", "24"}); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want, source string }{
		{"kafka.brokers", c.brokers, "k1:9092,k2:9092", "file " + path},
		{"kafka.partitions", strconv.Itoa(c.partitions), "24", "flag"},
		{"kafka.commit-interval", c.commitEvery.String(), "2s", "file " + path},
		{"kafka.session-timeout", c.session.String(), "10s", "file " + path},
		{"kafka.tls.enabled", strconv.FormatBool(c.tls.Enabled), "true", "file " + path},
		{"ops.addr", c.opsAddr, "env:9100", "env HERALD_OPS_ADDR"},
		{"http.addr", c.addr, "section:8080", "file " + path + " (section ingest)"},
		{"ingest.max-body", strconv.Itoa(int(c.icfg.MaxBodyBytes)), "2048", "file " + path},
		{"ingest.produce-timeout", c.icfg.ProduceTimeout.String(), "3s", "file " + path + " (section ingest)"},
		{"ingest.rate", strconv.Itoa(int(c.icfg.RatePerCredential)), "5000", "default"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
		if src := c.flags.source(ch.name); src != ch.source {
			t.Errorf("%s came from %q, want %q", ch.name, src, ch.source)
		}
	}

	// The segmenter reads its own section and the shared keys.
	s := newSegmenterCmd(&bytes.Buffer{})
	if err := s.flagSet().parse([]string{"-config", path}); err != nil {
		t.Fatal(err)
	}
	if s.addr != "seg:8081" || s.partitions != 16 || s.brokers != "k1:9092,k2:9092" {
		t.Errorf("segmenter: http.addr %q partitions %d brokers %q", s.addr, s.partitions, s.brokers)
	}
}

// TestConfigFileErrors: every mistake names the key (and its line).
func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	f := func(name, content, wantErr string) {
		t.Helper()
		path := writeFile(t, dir, name+".yaml", content)
		err := newIngestCmd(&bytes.Buffer{}).flagSet().parse([]string{"-config", path})
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, wantErr)
		}
	}
	f("unknown", "kafka:\n  brokers: a:9092\n  brokerz: b:9092\n", "unknown.yaml:3: kafka.brokerz: unknown option")
	f("unknown-in-section", "segmenter:\n  keywordz: k.yaml\n", "unknown-in-section.yaml:2: segmenter.keywordz: unknown option of herald segmenter")
	f("unknown-in-own-section", "ingest:\n  ratez: 5\n", "ingest.ratez: unknown option of herald ingest")
	f("bad-value", "ingest:\n  max_body: lots\n", "bad-value.yaml:2: ingest.max_body: parse error")
	f("bad-duration", "kafka.commit-interval: soon\n", "kafka.commit-interval")
	f("unset-env", "kafka.brokers: ${HERALD_T_SURELY_UNSET}\n", "kafka.brokers: ${HERALD_T_SURELY_UNSET}: environment variable HERALD_T_SURELY_UNSET is not set")
	f("not-a-map", "- a\n- b\n", "want a mapping")
	f("list-of-maps", "kafka:\n  brokers: [{a: 1}]\n", "kafka.brokers: a list of plain values is expected")
	f("nested-config", "config: other.yaml\n", "config: a config file cannot name another")
	f("yaml-syntax", "kafka: [\n", "yaml")

	// Options of another command at the top level are fine for this one.
	ok := writeFile(t, dir, "other.yaml", "clickhouse.dsn: clickhouse://ch:9000/herald\nsegmenter.keywords: k.yaml\nwhatsapp.rate: 10\n")
	if err := newIngestCmd(&bytes.Buffer{}).flagSet().parse([]string{"-config", ok}); err != nil {
		t.Errorf("options of other commands: %v", err)
	}
}

// TestSecrets: secrets come from files (flag, env or file option), are
// never printed, and setting a secret twice is an error.
func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	const secret, chSecret = "kafka-pa55-word", "ch-pa55-word"
	kfile := writeFile(t, dir, "kafka-password", secret+"\n")
	chfile := writeFile(t, dir, "ch-password", chSecret)
	cfg := writeFile(t, dir, "herald.yaml", `
kafka:
  sasl: {mechanism: SCRAM-SHA-512, user: herald}
clickhouse:
  dsn: clickhouse://analyst:dsn-secret@ch:9000/herald
  password_file: `+chfile+`
`)
	t.Setenv("HERALD_KAFKA_SASL_PASSWORD_FILE", kfile)
	c := newAnalyticsCmd(&bytes.Buffer{})
	if err := c.flagSet().parse([]string{"-config", cfg}); err != nil {
		t.Fatal(err)
	}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	if c.kcfg.SASLPassword != secret || c.kcfg.SASLMechanism != "SCRAM-SHA-512" || c.kcfg.SASLUser != "herald" {
		t.Errorf("kafka sasl: %q %q password read %v", c.kcfg.SASLMechanism, c.kcfg.SASLUser, c.kcfg.SASLPassword == secret)
	}
	if c.ch.dial.Password != chSecret {
		t.Errorf("clickhouse password from the file: got %d bytes", len(c.ch.dial.Password))
	}
	var out bytes.Buffer
	c.flags.printConfig(&out)
	printed := out.String()
	for _, s := range []string{secret, chSecret, "dsn-secret"} {
		if strings.Contains(printed, s) {
			t.Errorf("config print shows a secret %q:\n%s", s, printed)
		}
	}
	for _, want := range []string{
		"kafka.sasl.password: <redacted>", "clickhouse.password: <redacted>", "kafka.sasl.password-file: " + kfile,
		"env HERALD_KAFKA_SASL_PASSWORD_FILE", "clickhouse.dsn: clickhouse://analyst:xxxxx@ch:9000/herald", "kafka.sasl.user: herald",
	} {
		if !strings.Contains(printed, want) {
			t.Errorf("config print lacks %q:\n%s", want, printed)
		}
	}

	// Both the secret and its file: an error naming both, not the secret.
	t.Setenv("HERALD_KAFKA_SASL_PASSWORD", secret)
	err := newAnalyticsCmd(&bytes.Buffer{}).flagSet().parse([]string{"-config", cfg})
	if err == nil || !strings.Contains(err.Error(), "kafka.sasl.password and kafka.sasl.password-file are both set") || strings.Contains(err.Error(), secret) {
		t.Errorf("secret set twice: err = %v", err)
	}
	os.Unsetenv("HERALD_KAFKA_SASL_PASSWORD")
	t.Setenv("HERALD_KAFKA_SASL_PASSWORD_FILE", filepath.Join(dir, "missing"))
	err = newAnalyticsCmd(&bytes.Buffer{}).flagSet().parse(nil)
	if err == nil || !strings.Contains(err.Error(), "kafka.sasl.password-file: reading the secret") {
		t.Errorf("missing secret file: err = %v", err)
	}
}

// TestValidationNamesTheKey: -dry-run refuses each bad configuration with
// an error naming the option, without connecting anywhere.
func TestValidationNamesTheKey(t *testing.T) {
	dir := t.TempDir()
	appsFile := writeFile(t, dir, "apps.yaml", testAppsYAML)
	t.Setenv("HERALD_T_TOKEN", "test-api-token-0123456789")
	notPEM := writeFile(t, dir, "not.pem", "hello")
	f := func(args []string, wantErr string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := Main(append(args, "-dry-run"), &out, &errb)
		if wantErr == "" {
			if code != 0 || !strings.Contains(out.String(), "configuration ok") {
				t.Errorf("%v: code %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
			}
			return
		}
		if code == 0 || !strings.Contains(errb.String(), wantErr) {
			t.Errorf("%v: code %d, stderr %q, want it to contain %q", args, code, errb.String(), wantErr)
		}
	}
	// Valid: the broker address is not dialled by -dry-run.
	f([]string{"ingest", "-apps", appsFile, "-kafka.brokers", "127.0.0.1:1"}, "")
	f([]string{"dispatcher", "-apps", appsFile}, "")
	f([]string{"segmenter"}, "")
	f([]string{"analytics", "-clickhouse.dsn", "clickhouse://127.0.0.1:1/db"}, "")
	f([]string{"migrate"}, "")
	f([]string{"broker", "-data-dir", ""}, "")
	f([]string{"wasim", "-apps", appsFile}, "")

	f([]string{"ingest"}, "apps is required")
	f([]string{"ingest", "-apps", filepath.Join(dir, "missing.yaml")}, "apps: ")
	f([]string{"segmenter", "-kafka.brokers", ""}, "kafka.brokers is required")
	f([]string{"segmenter", "-kafka.partitions", "0"}, "kafka.partitions: want a positive number")
	f([]string{"segmenter", "-kafka.replication-factor", "0"}, "kafka.replication-factor")
	f([]string{"segmenter", "-kafka.commit-interval", "10ms"}, "kafka.commit-interval: want at least 100ms")
	f([]string{"segmenter", "-kafka.sasl.mechanism", "GSSAPI", "-kafka.sasl.user", "u"}, `kafka.sasl.mechanism: "GSSAPI" is not PLAIN`)
	f([]string{"segmenter", "-kafka.sasl.mechanism", "PLAIN"}, "kafka.sasl.user is required")
	f([]string{"segmenter", "-kafka.sasl.mechanism", "scram-sha-256", "-kafka.sasl.user", "u"}, "kafka.sasl.password (or kafka.sasl.password-file) is required")
	f([]string{"segmenter", "-kafka.sasl.user", "u"}, "kafka.sasl.mechanism is required")
	f([]string{"segmenter", "-kafka.tls.ca-file", filepath.Join(dir, "missing.pem")}, "kafka.tls.ca-file: reading")
	f([]string{"segmenter", "-kafka.tls.ca-file", notPEM}, "kafka.tls.ca-file: "+notPEM+" holds no PEM certificate")
	f([]string{"segmenter", "-kafka.tls.cert-file", notPEM}, "kafka.tls.key-file is required with kafka.tls.cert-file")
	f([]string{"segmenter", "-kafka.tls.key-file", notPEM}, "kafka.tls.key-file is set without kafka.tls.cert-file")
	f([]string{"segmenter", "-segmenter.keywords", filepath.Join(dir, "missing.yaml")}, "segmenter.keywords: ")
	f([]string{"segmenter", "-http.addr", "127.0.0.1:0"}, "apps is required")
	f([]string{"segmenter", "-log.level", "loud"}, "-log.level")
	f([]string{"analytics", "-clickhouse.dsn", "http://ch:8123/db"}, "clickhouse.dsn: ")
	f([]string{"analytics", "-clickhouse.tls.cert-file", notPEM, "-clickhouse.tls.key-file", notPEM}, "clickhouse.tls.cert-file/clickhouse.tls.key-file: loading the key pair")
	f([]string{"dispatcher", "-apps", appsFile, "-whatsapp.base-url", "ftp://graph"}, "whatsapp.base-url")
	f([]string{"dispatcher", "-apps", appsFile, "-whatsapp.rate", "0"}, "whatsapp.rate: want a positive number")
	f([]string{"broker", "-port", "70000"}, "port: 70000 is not a TCP port")
}

// testAppsYAML is an apps file whose API token comes from HERALD_T_TOKEN.
const testAppsYAML = `apps:
  - id: ABCDE-12345
    api_token: env:HERALD_T_TOKEN
    whatsapp:
      phone_number_ids: ["106540352242922"]
      waba_id: "102290129340398"
      access_token: EAAGtest
      app_secret: test-app-secret
      verify_token: test-verify
`

// TestConfigValidateCommand: `herald config validate` checks one file for
// every stage and reports each.
func TestConfigValidateCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HERALD_T_TOKEN", "test-api-token-0123456789")
	appsFile := writeFile(t, dir, "apps.yaml", testAppsYAML)
	good := writeFile(t, dir, "good.yaml", "apps: "+appsFile+"\nkafka.brokers: [a:9092]\nanalytics:\n  clickhouse.dsn: clickhouse://ch:9000/herald\n")
	var out, errb bytes.Buffer
	if code := Main([]string{"config", "validate", "-config", good}, &out, &errb); code != 0 {
		t.Fatalf("valid file: code %d\n%s%s", code, out.String(), errb.String())
	}
	for _, stage := range []string{"ingest: ok", "segmenter: ok", "dispatcher: ok", "analytics: ok"} {
		if !strings.Contains(out.String(), stage) {
			t.Errorf("output lacks %q:\n%s", stage, out.String())
		}
	}
	bad := writeFile(t, dir, "bad.yaml", "apps: "+appsFile+"\ndispatcher:\n  whatsapp.rate: -3\n")
	out.Reset()
	errb.Reset()
	if code := Main([]string{"config", "validate", "-config", bad}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), "dispatcher: whatsapp.rate: want a positive number") || !strings.Contains(out.String(), "ingest: ok") {
		t.Errorf("bad file: code %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := Main([]string{"config", "print", "-config", good, "-command", "analytics"}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "clickhouse.dsn: clickhouse://ch:9000/herald") {
		t.Errorf("print: code %d\n%s", code, out.String())
	}
}

// TestConfigDocsUpToDate: docs/CONFIG.md is what `herald config docs`
// writes (regenerate with make docs).
func TestConfigDocsUpToDate(t *testing.T) {
	var b bytes.Buffer
	writeConfigDocs(&b)
	path := filepath.Join("..", "..", "docs", "CONFIG.md")
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (write it with make docs)", err)
	}
	if !bytes.Equal(have, b.Bytes()) {
		t.Fatalf("docs/CONFIG.md is stale: run make docs (herald config docs > docs/CONFIG.md) and commit it")
	}
	// Every option of every command is in it.
	for _, c := range configCommands() {
		c.flagSet().VisitAll(func(fl *flag.Flag) {
			if !bytes.Contains(have, []byte("| `-"+fl.Name+"` |")) {
				t.Errorf("docs/CONFIG.md lacks -%s of herald %s", fl.Name, c.name)
			}
		})
	}
}

// TestKafkaSASLAndTLS: the SASL and TLS options reach a broker that
// requires them (kfake with SASL and mutual TLS), for each mechanism; a
// wrong password is refused.
func TestKafkaSASLAndTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	serverCert := issue(t, ca, caKey, false)
	clientCert := issue(t, ca, caKey, true)
	caFile := writeFile(t, dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})))
	certFile := writeFile(t, dir, "client.pem", string(clientCert.certPEM))
	keyFile := writeFile(t, dir, "client.key", string(clientCert.keyPEM))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srvPair, err := tls.X509KeyPair(serverCert.certPEM, serverCert.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(mech, "herald", "right-password"),
				kfake.TLS(&tls.Config{Certificates: []tls.Certificate{srvPair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cluster.Close)
			ping := func(password string, extra ...string) error {
				pwFile := writeFile(t, dir, "pw-"+mech, password+"\n")
				f := newStageFlags("segmenter", &bytes.Buffer{})
				args := append([]string{
					"-kafka.brokers", cluster.ListenAddrs()[0], "-kafka.sasl.mechanism", mech, "-kafka.sasl.user", "herald",
					"-kafka.sasl.password-file", pwFile, "-kafka.tls.ca-file", caFile, "-kafka.tls.server-name", "herald-test",
				}, extra...)
				if err := f.parse(args); err != nil {
					t.Fatal(err)
				}
				if err := f.check(); err != nil {
					t.Fatal(err)
				}
				cl, err := kgo.NewClient(f.kcfg.Opts(nil)...)
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				return kafka.Ping(ctx, cl)
			}
			if err := ping("right-password", "-kafka.tls.cert-file", certFile, "-kafka.tls.key-file", keyFile); err != nil {
				t.Fatalf("right password and client certificate: %v", err)
			}
			if err := ping("wrong-password", "-kafka.tls.cert-file", certFile, "-kafka.tls.key-file", keyFile); err == nil {
				t.Fatal("a wrong password was accepted")
			}
			if err := ping("right-password"); err == nil {
				t.Fatal("a client without certificate was accepted by a broker that requires one")
			}
		})
	}
}

type certPair struct{ certPEM, keyPEM []byte }

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, client bool) certPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "herald-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		DNSNames: []string{"herald-test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certPair{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})}
}

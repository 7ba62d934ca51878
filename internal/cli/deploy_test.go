package cli

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// checkDeployConfig parses herald.yaml (paths already pointing at local
// files) for every config-reading command and runs its full check, as
// `herald config validate` and each container's start do.
func checkDeployConfig(t *testing.T, cfg string, commands ...string) {
	t.Helper()
	for _, c := range configCmds {
		if len(commands) > 0 && !contains(commands, c.name) {
			continue
		}
		dc := c.new(&bytes.Buffer{})
		if err := dc.flagSet().parse([]string{"-config", cfg}); err != nil {
			t.Errorf("herald %s: %v", c.name, err)
			continue
		}
		if err := dc.check(); err != nil {
			t.Errorf("herald %s: %v", c.name, err)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestComposeConfigValid: deploy/compose/herald.yaml and apps.yaml, as
// docker-compose.yml mounts them, are valid for every command it runs.
func TestComposeConfigValid(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", "deploy", "compose"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "herald.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.NewReplacer("/etc/herald/", root+"/", "/run/secrets/", root+"/secrets/").Replace(string(b))
	cfg := writeFile(t, t.TempDir(), "herald.yaml", src)
	for _, kv := range [][2]string{
		{"HERALD_DEMO_API_TOKEN", "demo-api-token-0123456789"},
		{"HERALD_DEMO_SEGMENT_WRITE_KEY", "demo-write-key"},
		{"HERALD_DEMO_ACCESS_TOKEN", "EAAGdemo"},
		{"HERALD_DEMO_APP_SECRET", "demo-app-secret"},
		{"HERALD_DEMO_VERIFY_TOKEN", "demo-verify-token"},
	} {
		t.Setenv(kv[0], kv[1])
	}
	checkDeployConfig(t, cfg, "ingest", "segmenter", "dispatcher", "analytics", "migrate", "wasim")
	// The values compose relies on.
	c := newDispatcherCmd(&bytes.Buffer{})
	if err := c.flagSet().parse([]string{"-config", cfg}); err != nil {
		t.Fatal(err)
	}
	if c.dcfg.WhatsAppBaseURL != "http://wasim:8090" || c.brokers != "redpanda:9092" || c.opsAddr != "0.0.0.0:9100" {
		t.Errorf("dispatcher: base url %q brokers %q ops %q", c.dcfg.WhatsAppBaseURL, c.brokers, c.opsAddr)
	}
}

// TestKubernetesConfigValid: the herald.yaml and apps.yaml of
// deploy/kubernetes/config.yaml are valid for every stage, with the
// Secret's files and variables in place (SASL, TLS CA, ClickHouse
// password).
func TestKubernetesConfigValid(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `yaml:"kind"`
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil || cm.Kind != "ConfigMap" {
		t.Fatalf("config.yaml: kind %q: %v", cm.Kind, err)
	}
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, _ := newCA(t)
	writeFile(t, secrets, "kafka-ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})))
	writeFile(t, secrets, "kafka-sasl-password", "k8s-kafka-password\n")
	writeFile(t, secrets, "clickhouse-password", "k8s-clickhouse-password\n")
	r := strings.NewReplacer("/etc/herald/", dir+"/", "/run/secrets/herald/", secrets+"/")
	writeFile(t, dir, "apps.yaml", r.Replace(cm.Data["apps.yaml"]))
	cfg := writeFile(t, dir, "herald.yaml", r.Replace(cm.Data["herald.yaml"]))
	for _, k := range []string{"HERALD_APP_API_TOKEN", "HERALD_APP_SEGMENT_WRITE_KEY", "HERALD_APP_WHATSAPP_ACCESS_TOKEN", "HERALD_APP_META_APP_SECRET", "HERALD_APP_META_VERIFY_TOKEN"} {
		t.Setenv(k, "k8s-secret-value-0123456789")
	}
	checkDeployConfig(t, cfg, "ingest", "segmenter", "dispatcher", "analytics", "migrate")
	c := newAnalyticsCmd(&bytes.Buffer{})
	if err := c.flagSet().parse([]string{"-config", cfg}); err != nil {
		t.Fatal(err)
	}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	if c.kcfg.SASLPassword != "k8s-kafka-password" || c.kcfg.SASLMechanism != "SCRAM-SHA-512" || c.ch.dial.Password != "k8s-clickhouse-password" ||
		c.ch.dial.TLS == nil || c.migrate {
		t.Errorf("analytics: sasl %q password read %v, clickhouse password read %v tls %v, migrate %v",
			c.kcfg.SASLMechanism, c.kcfg.SASLPassword == "k8s-kafka-password", c.ch.dial.Password == "k8s-clickhouse-password", c.ch.dial.TLS != nil, c.migrate)
	}
}

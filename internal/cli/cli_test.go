package cli

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestEnvName(t *testing.T) {
	f := func(flag, want string) {
		t.Helper()
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
	f("kafka.brokers", "HERALD_KAFKA_BROKERS")
	f("clickhouse.dsn", "HERALD_CLICKHOUSE_DSN")
	f("whatsapp.base-url", "HERALD_WHATSAPP_BASE_URL")
}

func TestFlagsFromEnvCommandLineWins(t *testing.T) {
	t.Setenv("HERALD_KAFKA_BROKERS", "env:9092")
	t.Setenv("HERALD_OPS_ADDR", "env:9100")
	f := newStageFlags("x", &bytes.Buffer{})
	if err := f.parse([]string{"-ops.addr", "flag:9100"}); err != nil {
		t.Fatal(err)
	}
	if f.brokers != "env:9092" || f.opsAddr != "flag:9100" {
		t.Fatalf("brokers %q ops %q", f.brokers, f.opsAddr)
	}
	t.Setenv("HERALD_KAFKA_PARTITIONS", "many")
	if err := newStageFlags("x", &bytes.Buffer{}).parse(nil); err == nil || !strings.Contains(err.Error(), "HERALD_KAFKA_PARTITIONS") {
		t.Fatalf("bad env value: err = %v", err)
	}
}

func TestFlagsFromConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/herald.yaml"
	if err := os.WriteFile(path, []byte("kafka.brokers: [a:9092, b:9092]\nops.addr: file:9100\nkafka.partitions: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HERALD_OPS_ADDR", "env:9100")
	f := newStageFlags("x", &bytes.Buffer{})
	if err := f.parse([]string{"-config", path}); err != nil {
		t.Fatal(err)
	}
	if f.brokers != "a:9092,b:9092" || f.opsAddr != "env:9100" || f.partitions != 3 {
		t.Fatalf("brokers %q ops %q partitions %d", f.brokers, f.opsAddr, f.partitions)
	}
	if err := os.WriteFile(path, []byte("kafka.brokerz: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := newStageFlags("x", &bytes.Buffer{}).parse([]string{"-config", path})
	if err == nil || !strings.Contains(err.Error(), "herald.yaml:1: kafka.brokerz: unknown option") {
		t.Fatalf("unknown key: err = %v", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"nope"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "nope"`) {
		t.Fatalf("code %d stderr %q", code, errb.String())
	}
	out.Reset()
	if code := Main(nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "segmenter") {
		t.Fatalf("help: code %d out %q", code, out.String())
	}
}

func TestRedactDSN(t *testing.T) {
	if got := redactDSN("clickhouse://u:secret@h:9000/db"); strings.Contains(got, "secret") {
		t.Fatalf("redactDSN leaked the password: %q", got)
	}
}

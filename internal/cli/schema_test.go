package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSchemaValidate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.ndjson")
	records := strings.Join([]string{
		`{"v":1,"id":"e1","app":"shop","kind":"event","name":"OrderPlaced","time":"2026-11-23T10:00:00Z","hwid":"whatsapp:+919812345678","attributes":{"cuisine":"asian"}}`,
		``,
		`{"v":1,"id":"e2","app":"shop","kind":"event","time":"2026-11-23T10:00:00Z","hwid":"whatsapp:+919812345678"}`,
		`{"v":2,"id":"e3","app":"shop","kind":"tags","time":"2026-11-23T10:00:00Z","user_id":"u1"}`,
		`{"v":1,"id":"e4","app":"shop","kind":"tags","time":"2026-11-23T10:00:00Z","user_id":"u1","tagz":{}}`,
		`not json`,
	}, "\n")
	if err := os.WriteFile(path, []byte(records), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Main([]string{"schema", "validate", "-keys", path}, &out, &errb)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; stderr %q", code, errb.String())
	}
	got := out.String()
	for _, want := range []string{
		path + `:1: key "shop|whatsapp:+919812345678"`,
		path + `:3: invalid record: event: name is required for kind "event"`,
		path + `:4: unsupported record version: got v=2, want 1`,
		path + `:5: invalid record: decoding json: json: unknown field "tagz"`,
		path + `:6: invalid record: decoding json:`,
		"5 records, 1 valid, 4 invalid (herald.events.v1)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(errb.String(), "invalid records: 4 of 5") {
		t.Errorf("stderr %q", errb.String())
	}

	// Not strict: the unknown field is accepted, as consumers do.
	out.Reset()
	errb.Reset()
	if code := Main([]string{"schema", "validate", "-strict=false", path}, &out, &errb); code != 1 || !strings.Contains(out.String(), "5 records, 2 valid, 3 invalid") {
		t.Fatalf("non-strict: code %d out %s", code, out.String())
	}
	errb.Reset()
	if code := Main([]string{"schema", "validate", "-topic", "nope", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), `unknown topic "nope"`) {
		t.Fatalf("unknown topic: code %d stderr %s", code, errb.String())
	}
}

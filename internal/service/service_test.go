package service

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestReadyzDrains: /readyz follows the checks, then answers 503 once
// draining; /healthz stays 200.
func TestReadyzDrains(t *testing.T) {
	o := NewOps()
	failing := false
	o.AddCheck("kafka", func(context.Context) error {
		if failing {
			return errors.New("unreachable")
		}
		return nil
	})
	get := func(path string) (int, map[string]string) {
		t.Helper()
		rec := httptest.NewRecorder()
		o.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return rec.Code, body
	}
	if code, body := get("/readyz"); code != http.StatusOK || body["kafka"] != "ok" {
		t.Fatalf("ready: %d %v", code, body)
	}
	failing = true
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body["kafka"] != "unreachable" {
		t.Fatalf("check failing: %d %v", code, body)
	}
	failing = false
	o.Drain()
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body["status"] != "draining" {
		t.Fatalf("draining: %d %v", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz while draining: %d", code)
	}
}

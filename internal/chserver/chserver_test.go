package chserver

import (
	"context"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// TestRestartKeepsData starts a private server, creates a table, stops it,
// starts it again on the same dir and finds the table.
func TestRestartKeepsData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ClickHouse twice")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	s, err := Start(ctx, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s.Version == "" {
		t.Fatal("no version reported")
	}
	run(t, s, "CREATE TABLE kept (n UInt8) ENGINE = MergeTree ORDER BY n")
	s.Close()

	s2, err := Start(ctx, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	run(t, s2, "SELECT count() FROM kept")
}

func run(t *testing.T, s *Server, q string) {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(t.Context(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestStartNeedsDir(t *testing.T) {
	if _, err := Start(t.Context(), Config{}); err == nil {
		t.Fatal("Start without a dir succeeded")
	}
}

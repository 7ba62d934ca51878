// Package chtest gives tests a real ClickHouse: one private server per test
// binary (started on first use, stopped by Main), a fresh database per test.
//
// A package that uses it runs its tests through Main:
//
//	func TestMain(m *testing.M) { chtest.Main(m) }
//
// There is no skip: without a ClickHouse binary the tests fail and say how to
// install one (`make test` installs it).
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/heraldhq/herald/internal/chserver"
)

var (
	once   sync.Once
	server *chserver.Server
	dir    string
	err    error
)

// Main runs the package's tests and stops the server afterwards.
func Main(m *testing.M) {
	code := m.Run()
	if server != nil {
		server.Close()
	}
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	os.Exit(code)
}

// Server returns the shared server, starting it on first use.
func Server(t testing.TB) *chserver.Server {
	t.Helper()
	once.Do(func() {
		dir, err = os.MkdirTemp("", "herald-chtest-")
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		server, err = chserver.Start(ctx, chserver.Config{Dir: dir})
	})
	if err != nil {
		t.Fatalf("starting clickhouse for tests: %v", err)
	}
	return server
}

// DB creates a fresh database on the shared server, drops it when t ends, and
// returns its DSN and an open connection.
func DB(t testing.TB) (string, driver.Conn) {
	t.Helper()
	s := Server(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	db := "t_" + hex.EncodeToString(b)
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		conn.Close()
	})
	dconn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}, Auth: clickhouse.Auth{Database: db}, ReadTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dconn.Close() })
	return s.DSN(db), dconn
}

// Count runs a count query and returns its single number.
func Count(t testing.TB, conn driver.Conn, query string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

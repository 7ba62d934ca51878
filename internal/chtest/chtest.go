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
	"fmt"
	"os"
	"strconv"
	"strings"
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

// Private is a ClickHouse server of one test's own, which the test may stop
// and start again (same ports, same data), e.g. to show that a consumer
// waits out an outage. Its default database is "default".
type Private struct {
	t   testing.TB
	dir string
	cfg chserver.Config
	s   *chserver.Server
}

// NewPrivate starts a private server for t and stops it when t ends.
func NewPrivate(t testing.TB) *Private {
	t.Helper()
	p := &Private{t: t, dir: t.TempDir()}
	p.cfg = chserver.Config{Dir: p.dir}
	p.Start()
	// Later starts reuse the ports, so DSNs handed out stay valid.
	_, port, _ := strings.Cut(p.s.Addr, ":")
	_, hport, _ := strings.Cut(p.s.HTTPAddr, ":")
	p.cfg.TCPPort, _ = strconv.Atoi(port)
	p.cfg.HTTPPort, _ = strconv.Atoi(hport)
	t.Cleanup(p.Stop)
	return p
}

// DSN is the native-protocol DSN of the server's default database.
func (p *Private) DSN() string {
	return fmt.Sprintf("clickhouse://127.0.0.1:%d/default?dial_timeout=2s", p.cfg.TCPPort)
}

// Addr is the server's native-protocol address.
func (p *Private) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.cfg.TCPPort) }

// Stop stops the server (a no-op when stopped).
func (p *Private) Stop() {
	if p.s != nil {
		p.s.Close()
		p.s = nil
	}
}

// Start starts the server again on its dir and ports (a no-op when running).
func (p *Private) Start() {
	p.t.Helper()
	if p.s != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := chserver.Start(ctx, p.cfg)
	if err != nil {
		p.t.Fatalf("starting private clickhouse: %v", err)
	}
	p.s = s
}

// Package chserver starts a private ClickHouse server for tests and
// `herald dev`: free ports on 127.0.0.1, its own config, users and data dir,
// ready when Start returns, stopped by Close (and killed with its parent).
//
// It runs the clickhouse-server found on PATH or in /usr/sbin (Debian's
// package, 18.16 on bookworm) or the official single binary `clickhouse`
// (run as `clickhouse server`). Install one with `make deps`
// (apt-get install -y clickhouse-server) or see ErrNotInstalled.
package chserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ErrNotInstalled is returned by Start when no ClickHouse binary is found.
var ErrNotInstalled = errors.New("no clickhouse server binary found: run `make deps` " +
	"(apt-get install -y clickhouse-server), or put the official binary from " +
	"clickhouse.com (`curl https://clickhouse.com/ | sh`) on PATH, " +
	"or point -clickhouse.dsn at a running server")

// Config of a private server.
type Config struct {
	// Dir holds the server's config, data and logs. Required; it is created
	// if missing and reused (with its data) if it exists.
	Dir string
	// TCPPort and HTTPPort, 0 for free ports. Default 0.
	TCPPort  int
	HTTPPort int
	// StartTimeout bounds the wait for the server to answer. Default 60s.
	StartTimeout time.Duration
}

// Server is a running private ClickHouse server.
type Server struct {
	// Addr is the native-protocol address, host:port.
	Addr string
	// HTTPAddr is the HTTP interface address, host:port.
	HTTPAddr string
	// Version is what the server reports from SELECT version().
	Version string

	cmd  *exec.Cmd
	done chan struct{}
	dir  string
}

// DSN returns a clickhouse-go DSN for database db on the server.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("clickhouse://%s/%s?dial_timeout=5s", s.Addr, db)
}

// findBinary returns the command that runs a server.
func findBinary() ([]string, error) {
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return []string{p}, nil
	}
	if _, err := os.Stat("/usr/sbin/clickhouse-server"); err == nil {
		return []string{"/usr/sbin/clickhouse-server"}, nil
	}
	if p, err := exec.LookPath("clickhouse"); err == nil {
		return []string{p, "server"}, nil
	}
	return nil, ErrNotInstalled
}

// Installed reports whether a server binary can be found.
func Installed() bool {
	_, err := findBinary()
	return err == nil
}

// Start starts a server and waits until it answers queries.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	bin, err := findBinary()
	if err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, errors.New("chserver: dir is required")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolving clickhouse dir: %w", err)
	}
	for _, d := range []string{"data", "tmp", "log", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating clickhouse dir: %w", err)
		}
	}
	// A free port can be taken by someone else between the pick and the
	// server's bind; try a few times.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		tcp, http := cfg.TCPPort, cfg.HTTPPort
		if tcp == 0 {
			if tcp, err = freePort(); err != nil {
				return nil, err
			}
		}
		if http == 0 {
			if http, err = freePort(); err != nil {
				return nil, err
			}
		}
		s, err := start(ctx, bin, dir, tcp, http, cfg.StartTimeout)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if cfg.TCPPort != 0 || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func start(ctx context.Context, bin []string, dir string, tcp, http int, timeout time.Duration) (*Server, error) {
	if err := writeConfig(dir, tcp, http); err != nil {
		return nil, err
	}
	args := append(slices.Clone(bin[1:]), "--config-file="+filepath.Join(dir, "config.xml"))
	cmd := exec.Command(bin[0], args...)
	cmd.Dir = dir
	logf, err := os.OpenFile(filepath.Join(dir, "log", "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening clickhouse log: %w", err)
	}
	defer func() { _ = logf.Close() }() // the server writes it; nothing to do if closing fails
	cmd.Stdout, cmd.Stderr = logf, logf
	// Die with the parent, so a killed test run leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin[0], err)
	}
	s := &Server{
		Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp)),
		HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(http)),
		cmd:      cmd,
		done:     make(chan struct{}),
		dir:      dir,
	}
	go func() { _ = cmd.Wait(); close(s.done) }()

	deadline := time.Now().Add(timeout)
	for {
		v, err := s.ping(ctx)
		if err == nil {
			s.Version = v
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("clickhouse server exited at start: %s", s.tailLog())
		case <-ctx.Done():
			s.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("clickhouse server not ready after %s: %w; log: %s", timeout, err, s.tailLog())
		}
	}
}

func (s *Server) ping(ctx context.Context) (string, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}, DialTimeout: time.Second})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "", err
	}
	return v, nil
}

func (s *Server) tailLog() string {
	var out []string
	for _, f := range []string{"stdout.log", "error.log"} {
		b, _ := os.ReadFile(filepath.Join(s.dir, "log", f))
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		if len(b) > 0 {
			out = append(out, f+": "+strings.TrimSpace(string(b)))
		}
	}
	return strings.Join(out, "\n")
}

// Close stops the server: SIGTERM, then SIGKILL after 10 s.
func (s *Server) Close() {
	if s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeConfig writes a minimal config that both 18.16 and current releases
// accept (<yandex> is still read as the root element by current releases).
func writeConfig(dir string, tcp, http int) error {
	cfg := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>%[1]s/log/server.log</log>
    <errorlog>%[1]s/log/error.log</errorlog>
    <size>10M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>%[1]s/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <max_server_memory_usage_to_ram_ratio>0.25</max_server_memory_usage_to_ram_ratio>
</yandex>
`, dir, tcp, http)
	users := `<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>2000000000</max_memory_usage>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries><errors>0</errors><result_rows>0</result_rows>
        <read_rows>0</read_rows><execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
`
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("writing clickhouse config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(users), 0o644); err != nil {
		return fmt.Errorf("writing clickhouse users: %w", err)
	}
	return nil
}

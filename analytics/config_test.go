package analytics

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/internal/kafka"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		in      Config
		want    Config
		wantErr string
	}{
		{
			name: "defaults",
			want: Config{
				Group: DefaultGroup, DSN: DefaultDSN, BatchRows: 50000, FlushInterval: time.Second,
				FactsGroup: DefaultFactsGroup, FactsHorizon: 35 * 24 * time.Hour, SettleInterval: time.Minute,
			},
		},
		{
			name: "kept",
			in: Config{
				Group: "g", DSN: "clickhouse://u:p@ch:9000/herald", BatchRows: 5, FlushInterval: time.Minute,
				FactsGroup: "f", FactsHorizon: 48 * time.Hour, SettleInterval: 5 * time.Second,
			},
			want: Config{
				Group: "g", DSN: "clickhouse://u:p@ch:9000/herald", BatchRows: 5, FlushInterval: time.Minute,
				FactsGroup: "f", FactsHorizon: 48 * time.Hour, SettleInterval: 5 * time.Second,
			},
		},
		{name: "negative batch rows", in: Config{BatchRows: -1}, wantErr: "batch_rows must not be negative"},
		{name: "negative flush interval", in: Config{FlushInterval: -time.Second}, wantErr: "flush_interval must not be negative"},
		{name: "facts group is the group", in: Config{Group: "g", FactsGroup: "g"}, wantErr: "facts_group must differ from group"},
		{name: "negative horizon", in: Config{FactsHorizon: -time.Hour}, wantErr: "facts_horizon must not be negative"},
		{name: "short horizon", in: Config{FactsHorizon: time.Hour}, wantErr: "facts_horizon must be at least 24h"},
		{name: "negative settle interval", in: Config{SettleInterval: -time.Second}, wantErr: "settle_interval must not be negative"},
		{name: "http dsn", in: Config{DSN: "http://ch:8123/herald"}, wantErr: "want the native protocol"},
		{name: "dsn without host", in: Config{DSN: "clickhouse:///herald"}, wantErr: "parsing clickhouse dsn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.in
			err := c.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c != tt.want {
				t.Fatalf("Validate left %+v, want %+v", c, tt.want)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	dsn, _ := chtest.DB(t)
	conn, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open(%s): %v", dsn, err)
	}
	defer conn.Close()
	if n := count(t, conn, "SELECT count() FROM system.one"); n != 1 {
		t.Fatalf("query on the opened connection returned %d", n)
	}
}

func TestOpenErrorsNameHostNotPassword(t *testing.T) {
	const secret = "s3cr3t-pw"
	tests := []struct {
		name string
		dsn  string
		want string
	}{
		{"nothing listening", "clickhouse://herald:" + secret + "@127.0.0.1:1/herald?dial_timeout=500ms", "127.0.0.1:1/herald"},
		{"http protocol", "http://herald:" + secret + "@127.0.0.1:8123/herald", "native protocol"},
		{"bad url", "clickhouse://herald:" + secret + "@127.0.0.1:9000/%zz", "parsing clickhouse dsn"},
		{"bad setting", "clickhouse://herald:" + secret + "@127.0.0.1:9000/herald?dial_timeout=forever", "parsing clickhouse dsn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			conn, err := Open(ctx, tt.dsn)
			if err == nil {
				conn.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	_, conn := chtest.DB(t)
	f := func(cfg Config, kcfg kafka.Config, want string) {
		t.Helper()
		s, err := New(cfg, kcfg, conn, nil, nil)
		if err == nil {
			s.Close()
			t.Fatalf("New succeeded, want an error containing %q", want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("New = %v, want an error containing %q", err, want)
		}
	}
	f(Config{BatchRows: -1}, kafka.Config{Brokers: []string{"127.0.0.1:1"}}, "batch_rows")
	f(Config{}, kafka.Config{}, "brokers is required")
	if _, err := New(Config{}, kafka.Config{Brokers: []string{"127.0.0.1:1"}}, nil, nil, nil); err == nil {
		t.Fatal("New without a connection succeeded")
	}
}

// Package broker runs franz-go's kfake as Herald's embedded Kafka broker:
// in-process for `herald dev` and tests, standalone as `herald broker`. With
// a data dir every topic, offset and group survives a restart.
package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config of the embedded broker.
type Config struct {
	// Port to listen on, on 127.0.0.1 unless Host says otherwise. 0 picks a
	// free port. Default 0.
	Port int `yaml:"port"`
	// Host to listen on. Default 127.0.0.1.
	Host string `yaml:"host"`
	// DataDir persists the broker's state; empty keeps it in memory only.
	DataDir string `yaml:"data_dir"`
	// SyncWrites fsyncs every produced batch before acknowledging it
	// (slower, survives power loss). Default false: the page cache, synced
	// on segment roll and shutdown, like Kafka's own default.
	SyncWrites bool `yaml:"sync_writes"`
	// Partitions is the default partition count of auto-created topics.
	// Default 8.
	Partitions int32 `yaml:"partitions"`
	// Topics are created at start when they do not exist yet.
	Topics []string `yaml:"topics"`
}

// Broker is a running embedded broker.
type Broker struct {
	c *kfake.Cluster
}

// Start starts the broker.
func Start(cfg Config, log *slog.Logger) (*Broker, error) {
	if cfg.Partitions <= 0 {
		cfg.Partitions = 8
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(int(cfg.Partitions)),
		kfake.ListenFn(listen(cfg.Host)),
		kfake.Ports(cfg.Port),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(cfg.Partitions, cfg.Topics...))
	}
	if log != nil {
		opts = append(opts, kfake.WithLogger(slogLogger{log.With("component", "broker")}))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting embedded broker: %w", err)
	}
	return &Broker{c: c}, nil
}

// Addrs are the host:port addresses of the broker.
func (b *Broker) Addrs() []string { return b.c.ListenAddrs() }

// Cluster is the kfake cluster, for tests that inject faults with ControlKey.
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker, flushing its data dir.
func (b *Broker) Close() { b.c.Close() }

// listen binds kfake's listeners to host instead of its fixed 127.0.0.1.
func listen(host string) func(network, address string) (net.Listener, error) {
	return func(network, address string) (net.Listener, error) {
		if i := strings.LastIndexByte(address, ':'); i >= 0 {
			address = net.JoinHostPort(host, address[i+1:])
		}
		return net.Listen(network, address)
	}
}

// slogLogger bridges kfake's logger to slog, warnings and errors only.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	var lv slog.Level
	switch level {
	case kfake.LogLevelError:
		lv = slog.LevelError
	case kfake.LogLevelWarn:
		lv = slog.LevelWarn
	default:
		return
	}
	l.log.Log(context.Background(), lv, fmt.Sprintf(msg, args...))
}

// Package cli is the herald command: one subcommand per stage plus the
// embedded-defaults runners (dev, demo, bench). cmd/herald/main.go only calls
// Main.
//
// Every flag can also be set through the environment: -kafka.brokers is
// HERALD_KAFKA_BROKERS, -clickhouse.dsn is HERALD_CLICKHOUSE_DSN (upper case,
// dots and dashes as underscores), and from a YAML file given with -config
// (nested or flat keys, ${ENV:default} interpolation, per-command sections;
// see config.go and docs/CONFIG.md). A flag on the command line wins over the
// environment, which wins over the file. Secrets (passwords) also come from
// files (-NAME-file, HERALD_NAME_FILE) and are never printed.
//
// Stage commands (ingest, segmenter, dispatcher, analytics, and broker and
// wasim) check their whole configuration before they connect anywhere;
// -dry-run stops after that check. On SIGTERM or SIGINT they stop taking
// work, finish and commit what is in flight, and exit within
// -shutdown.timeout (a second signal exits at once).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"dev":         {"run every stage in one process on embedded defaults (broker, ClickHouse, WhatsApp simulator)", runDev},
		"demo":        {"run dev with a sample workload, wait until it drained, print a report from ClickHouse", runDemo},
		"bench":       {"measure each stage's throughput against a bare franz-go consumer", runBench},
		"broker":      {"run the embedded Kafka broker (franz-go kfake) standalone, with a data dir", runBroker},
		"wasim":       {"run the WhatsApp Cloud API simulator", runWasim},
		"ingest":      {"run the ingest stage: HTTP APIs and Meta's webhook -> Kafka", runIngest},
		"segmenter":   {"run the segmenter stage: events -> profiles, keyword triggers -> dispatch requests", runSegmenter},
		"dispatcher":  {"run the dispatcher stage: dispatch requests -> WhatsApp Cloud API -> outcomes, and the scheduler (scheduled requests -> dispatch requests at send_at)", runDispatcher},
		"analytics":   {"run the analytics stage: events and outcomes -> ClickHouse", runAnalytics},
		"migrate":     {"apply ClickHouse schema migrations and exit", runMigrate},
		"report":      {"print the pipeline report read back from ClickHouse", runReport},
		"loadgen":     {"open-loop HTTP load on ingest (postEvent, Segment batch, signed webhooks) with latency percentiles", runLoadgen},
		"schema":      {"schema validate FILE: check records meant for a Herald topic, as the pipeline will", runSchema},
		"config":      {"config validate|print|docs: check a config file for every stage, print the effective options (secrets masked), write docs/CONFIG.md", runConfig},
		"healthcheck": {"healthcheck [-url http://127.0.0.1:9100/readyz]: exit 0 when the URL answers 200 (container health checks; the image has no shell)", runHealthcheck},
	}
}

// Main runs the subcommand named by args[0] and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "herald: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal the default handling is back: a second one
	// ends the process at once, without waiting for the drain.
	context.AfterFunc(ctx, stop)
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "herald %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "herald: WhatsApp-first customer-engagement pipeline")
	fmt.Fprintln(w, "\nusage: herald <command> [flags]   (herald <command> -h for its flags)")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
}

func (f *flags) logger(stderr io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("-log.level: %w", err)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv})), nil
}

// stringList is a repeatable or comma-separated flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

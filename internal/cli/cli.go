// Package cli is the herald command: one subcommand per stage plus the
// embedded-defaults runners (dev, demo, bench). cmd/herald/main.go only calls
// Main.
//
// Every flag can also be set through the environment: -kafka.brokers is
// HERALD_KAFKA_BROKERS, -clickhouse.dsn is HERALD_CLICKHOUSE_DSN (upper case,
// dots and dashes as underscores), and from a YAML file given with -config
// whose keys are flag names. A flag on the command line wins over the
// environment, which wins over the file.
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

	"go.yaml.in/yaml/v3"
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"dev":        {"run every stage in one process on embedded defaults (broker, ClickHouse, WhatsApp simulator)", runDev},
		"demo":       {"run dev with a sample workload, wait until it drained, print a report from ClickHouse", runDemo},
		"bench":      {"measure each stage's throughput against a bare franz-go consumer", runBench},
		"broker":     {"run the embedded Kafka broker (franz-go kfake) standalone, with a data dir", runBroker},
		"wasim":      {"run the WhatsApp Cloud API simulator", runWasim},
		"ingest":     {"run the ingest stage: HTTP APIs and Meta's webhook -> Kafka", runIngest},
		"segmenter":  {"run the segmenter stage: events -> profiles, keyword triggers -> dispatch requests", runSegmenter},
		"dispatcher": {"run the dispatcher stage: dispatch requests -> WhatsApp Cloud API -> outcomes, and the scheduler (scheduled requests -> dispatch requests at send_at)", runDispatcher},
		"analytics":  {"run the analytics stage: events and outcomes -> ClickHouse", runAnalytics},
		"migrate":    {"apply ClickHouse schema migrations and exit", runMigrate},
		"report":     {"print the pipeline report read back from ClickHouse", runReport},
		"loadgen":    {"open-loop HTTP load on ingest (postEvent, Segment batch, signed webhooks) with latency percentiles", runLoadgen},
		"schema":     {"schema validate FILE: check records meant for a Herald topic, as the pipeline will", runSchema},
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
		fmt.Fprintf(w, "  %-11s %s\n", n, commands[n].summary)
	}
}

// flags is a flag set whose flags also read HERALD_* environment variables
// and a YAML config file.
type flags struct {
	*flag.FlagSet
	logLevel string
	config   string
}

func newFlags(name string, stderr io.Writer) *flags {
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flags{FlagSet: fs}
	fs.StringVar(&f.logLevel, "log.level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.config, "config", "", "YAML file of flag values, keyed by flag name (e.g. http.addr: 127.0.0.1:8080); flags and HERALD_* variables win over it")
	return f
}

// envName is the environment variable that sets flag name.
func envName(name string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return "HERALD_" + strings.ToUpper(r.Replace(name))
}

// parse applies the arguments, then HERALD_* environment variables for flags
// the arguments did not set, then the -config file for flags neither set.
func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", f.Args())
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var err error
	f.VisitAll(func(fl *flag.Flag) {
		if v, ok := os.LookupEnv(envName(fl.Name)); ok && err == nil && !set[fl.Name] {
			if e := fl.Value.Set(v); e != nil {
				err = fmt.Errorf("environment %s: %w", envName(fl.Name), e)
			}
			set[fl.Name] = true
		}
	})
	if err != nil || f.config == "" {
		return err
	}
	return f.applyConfig(f.config, set)
}

// applyConfig sets the flags named in a YAML file, except those in skip.
func (f *flags) applyConfig(path string, skip map[string]bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("-config %s: %w", path, err)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fl := f.Lookup(k)
		if fl == nil || k == "config" {
			return fmt.Errorf("-config %s: unknown option %q (see herald %s -h)", path, k, strings.TrimPrefix(f.Name(), "herald "))
		}
		if skip[k] {
			continue
		}
		var v string
		switch x := m[k].(type) {
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			v = strings.Join(parts, ",")
		case nil:
			continue
		default:
			v = fmt.Sprint(x)
		}
		if err := fl.Value.Set(v); err != nil {
			return fmt.Errorf("-config %s: %s: %w", path, k, err)
		}
	}
	return nil
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

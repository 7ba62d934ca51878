package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// runConfig is `herald config validate|print|docs`.
func runConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	usage := "usage: herald config validate|print -config FILE [-command NAME]   |   herald config docs"
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("config: a subcommand is required")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "docs":
		if len(args) > 0 {
			return fmt.Errorf("config docs: unexpected arguments %v", args)
		}
		writeConfigDocs(stdout)
		return nil
	case "validate", "print":
	default:
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("config: unknown subcommand %q", sub)
	}
	f := newFlags("config "+sub, stderr)
	only := f.String("command", "", "only this command (ingest, segmenter, dispatcher, analytics, migrate, report, broker, wasim); default: the four stages")
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", f.Args())
	}
	var cmds []configCommand
	for _, c := range configCmds {
		if (*only == "" && c.stage) || c.name == *only {
			cmds = append(cmds, c)
		}
	}
	if len(cmds) == 0 {
		return fmt.Errorf("-command: %q is not a command that reads a config file", *only)
	}
	// Each command parses the same file and environment, as it would at
	// start; -config (or HERALD_CONFIG) is passed on.
	var cargs []string
	if f.config != "" {
		cargs = []string{"-config", f.config}
	}
	failed := 0
	for i, c := range cmds {
		dc := c.new(stderr)
		fs := dc.flagSet()
		err := fs.parse(cargs)
		if err == nil && sub == "validate" {
			err = dc.check()
		}
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(stdout, "%s: %v\n", c.name, err)
		case sub == "validate":
			fmt.Fprintf(stdout, "%s: ok\n", c.name)
		default:
			if i > 0 {
				fmt.Fprintln(stdout, "---")
			}
			fs.printConfig(stdout)
		}
	}
	if failed > 0 {
		return fmt.Errorf("config %s: %d of %d commands have an invalid configuration", sub, failed, len(cmds))
	}
	return nil
}

// runHealthcheck is `herald healthcheck`: a GET that succeeds on 200, for
// container health checks in an image without a shell or curl.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("healthcheck", stderr)
	url := f.String("url", "http://127.0.0.1:9100/readyz", "URL to GET (a stage's /healthz or /readyz)")
	timeout := f.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := f.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d: %s", *url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "%s\n", strings.TrimSpace(string(body)))
	return nil
}

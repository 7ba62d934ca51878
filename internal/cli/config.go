package cli

// Configuration: every option is a flag; the environment and a YAML file
// fill the flags the command line did not set.
//
// Precedence, highest first: the command line, HERALD_* environment
// variables, the -config file, the flag's default.
//
// The file holds flag values, flat (kafka.brokers: a:9092) or nested
// (kafka: {brokers: [a:9092]}); snake_case keys match kebab-case flags
// (ingest.max_body is -ingest.max-body). A top-level key named after a
// command (ingest:, segmenter:, dispatcher:, analytics:, wasim:, broker:,
// migrate:, report:) is a section read by that command only, which wins over
// the same option at the top level; so one file serves every stage. A key
// that is no option of any command is an error naming it and its line.
// Scalars may use ${NAME} or ${NAME:default} (the environment variable NAME,
// or default when NAME is unset or empty; $${ is a literal ${).
//
// Secret options (passwords) have a NAME-file twin holding a path whose
// content is the secret (trailing newline trimmed): HERALD_NAME_FILE, a
// Kubernetes or compose secret mount. Their values are never printed:
// config print and every error show them masked.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// flags is a flag set whose flags also read HERALD_* environment variables
// and a YAML config file, and that remembers where each value came from.
type flags struct {
	*flag.FlagSet
	// cmd is the command name, the section of the config file it reads.
	cmd      string
	logLevel string
	config   string
	// dryRun is set by -dry-run on the commands that declare it.
	dryRun bool

	// secrets maps a secret option to its value; secretFiles to its
	// -file twin's value.
	secrets     map[string]*string
	secretFiles map[string]*string
	// masks rewrite an option's value before it is printed.
	masks map[string]func(string) string
	// sources says where each option's value came from ("flag", "env
	// HERALD_X", "file F", "file F (section ingest)"); absent: the default.
	sources map[string]string
}

func newFlags(name string, stderr io.Writer) *flags {
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flags{
		FlagSet: fs, cmd: strings.Fields(name)[0], secrets: map[string]*string{},
		secretFiles: map[string]*string{}, masks: map[string]func(string) string{}, sources: map[string]string{},
	}
	fs.StringVar(&f.logLevel, "log.level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.config, "config", "", "YAML config file (docs/CONFIG.md): flat or nested option keys, per-command sections, ${ENV:default} values; flags and HERALD_* variables win over it")
	return f
}

// addDryRun declares -dry-run: check the configuration, then exit.
func (f *flags) addDryRun() {
	f.BoolVar(&f.dryRun, "dry-run", false, "check the configuration (files it names included) without connecting anywhere, then exit: 0 when valid")
}

// secretVar declares a secret option name and its name-file twin.
func (f *flags) secretVar(p *string, name, usage string) {
	f.StringVar(p, name, "", usage+"; a secret, never printed (prefer "+name+"-file or "+envName(name+"-file")+")")
	file := new(string)
	f.StringVar(file, name+"-file", "", "file holding "+name+" (a mounted secret; one trailing newline is trimmed)")
	f.secrets[name] = p
	f.secretFiles[name] = file
	f.masks[name] = maskSecret
}

// maskSecret is what a secret's value prints as.
func maskSecret(v string) string {
	if v == "" {
		return ""
	}
	return "<redacted>"
}

// envName is the environment variable that sets flag name.
func envName(name string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return "HERALD_" + strings.ToUpper(r.Replace(name))
}

// parse applies the arguments, then HERALD_* environment variables for flags
// the arguments did not set, then the -config file for flags neither set,
// then reads the secrets named by -file options.
func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", f.Args())
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) {
		set[fl.Name] = true
		f.sources[fl.Name] = "flag"
	})
	var err error
	f.VisitAll(func(fl *flag.Flag) {
		if v, ok := os.LookupEnv(envName(fl.Name)); ok && err == nil && !set[fl.Name] {
			if e := fl.Value.Set(v); e != nil {
				err = fmt.Errorf("environment %s: %w", envName(fl.Name), f.maskErr(fl.Name, v, e))
			}
			set[fl.Name] = true
			f.sources[fl.Name] = "env " + envName(fl.Name)
		}
	})
	if err != nil {
		return err
	}
	if f.config != "" {
		if err := f.applyConfig(f.config, set); err != nil {
			return err
		}
	}
	return f.readSecrets()
}

// maskErr returns err with a secret option's value hidden.
func (f *flags) maskErr(name, value string, err error) error {
	if _, secret := f.secrets[name]; !secret || value == "" {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), value, "<redacted>"))
}

// readSecrets fills each secret whose -file option is set from that file.
func (f *flags) readSecrets() error {
	names := make([]string, 0, len(f.secrets))
	for n := range f.secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path := *f.secretFiles[n]
		if path == "" {
			continue
		}
		if *f.secrets[n] != "" {
			return fmt.Errorf("%s and %s-file are both set (%s, %s): set one", n, n, f.source(n), f.source(n+"-file"))
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s-file: reading the secret: %w", n, err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return fmt.Errorf("%s-file: %s is empty", n, path)
		}
		*f.secrets[n] = v
		f.sources[n] = "file " + path + " (" + n + "-file)"
	}
	return nil
}

// source says where option name's value came from.
func (f *flags) source(name string) string {
	if s, ok := f.sources[name]; ok {
		return s
	}
	return "default"
}

// configEntry is one option value of a config file.
type configEntry struct {
	key   string // dotted, as written (snake_case segments kept)
	value string // scalars as written, lists joined with commas
	line  int
	null  bool
}

// readConfigFile parses a config file into its entries, in file order.
func readConfigFile(path string) ([]configEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("-config %s: %w", path, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil // an empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("-config %s:%d: want a mapping of option names to values", path, root.Line)
	}
	var out []configEntry
	if err := flatten(root, "", &out); err != nil {
		return nil, fmt.Errorf("-config %s:%w", path, err)
	}
	return out, nil
}

// flatten appends the leaves of a mapping node, keys joined with dots.
// Errors start with the line number (the caller prefixes the file).
func flatten(n *yaml.Node, prefix string, out *[]configEntry) error {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			return fmt.Errorf("%d: option names are non-empty strings", k.Line)
		}
		key := k.Value
		if prefix != "" {
			key = prefix + "." + key
		}
		switch v.Kind {
		case yaml.MappingNode:
			if err := flatten(v, key, out); err != nil {
				return err
			}
		case yaml.ScalarNode:
			*out = append(*out, configEntry{key: key, value: v.Value, line: k.Line, null: v.Tag == "!!null"})
		case yaml.SequenceNode:
			parts := make([]string, 0, len(v.Content))
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("%d: %s: a list of plain values is expected", item.Line, key)
				}
				parts = append(parts, item.Value)
			}
			*out = append(*out, configEntry{key: key, value: strings.Join(parts, ","), line: k.Line})
		case yaml.AliasNode:
			return fmt.Errorf("%d: %s: YAML aliases are not supported", k.Line, key)
		default:
			return fmt.Errorf("%d: %s: unexpected value", k.Line, key)
		}
	}
	return nil
}

// optionName maps a file key to a flag name: snake_case segments are the
// kebab-case flag's.
func optionName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// lookup finds the flag a key names in fs: as written, or in kebab case.
func lookup(fs *flag.FlagSet, key string) *flag.Flag {
	if fl := fs.Lookup(key); fl != nil {
		return fl
	}
	return fs.Lookup(optionName(key))
}

// applyConfig sets the flags named in a YAML file, except those in skip.
// Options of other commands (in their sections, or at the top level) are
// ignored; a key no command knows is an error.
func (f *flags) applyConfig(path string, skip map[string]bool) error {
	entries, err := readConfigFile(path)
	if err != nil {
		return err
	}
	type apply struct {
		fl      *flag.Flag
		e       configEntry
		section bool
	}
	var top, sect []apply
	for _, e := range entries {
		if e.key == "config" {
			return fmt.Errorf("-config %s:%d: config: a config file cannot name another", path, e.line)
		}
		if fl := lookup(f.FlagSet, e.key); fl != nil {
			top = append(top, apply{fl, e, false})
			continue
		}
		if rest, ok := strings.CutPrefix(e.key, f.cmd+"."); ok {
			if fl := lookup(f.FlagSet, rest); fl != nil && fl.Name != "config" {
				sect = append(sect, apply{fl, e, true})
				continue
			}
			return fmt.Errorf("-config %s:%d: %s: unknown option of herald %s (see herald %s -h or docs/CONFIG.md)", path, e.line, e.key, f.cmd, f.cmd)
		}
		if err := knownElsewhere(e.key); err != nil {
			return fmt.Errorf("-config %s:%d: %w", path, e.line, err)
		}
	}
	// Section values win over top-level ones: applied last.
	for _, a := range append(top, sect...) {
		if skip[a.fl.Name] || a.e.null {
			continue
		}
		v, err := interpolate(a.e.value)
		if err != nil {
			return fmt.Errorf("-config %s:%d: %s: %w", path, a.e.line, a.e.key, err)
		}
		if err := a.fl.Value.Set(v); err != nil {
			return fmt.Errorf("-config %s:%d: %s: %w", path, a.e.line, a.e.key, f.maskErr(a.fl.Name, v, err))
		}
		src := "file " + path
		if a.section {
			src += " (section " + f.cmd + ")"
		}
		f.sources[a.fl.Name] = src
	}
	return nil
}

// knownElsewhere returns nil when key is an option of some config-reading
// command (at the top level or in that command's section), else an error
// naming it.
func knownElsewhere(key string) error {
	for _, c := range configCommands() {
		fs := c.flagSet().FlagSet
		if lookup(fs, key) != nil {
			return nil
		}
		if rest, ok := strings.CutPrefix(key, c.name+"."); ok {
			if fl := lookup(fs, rest); fl != nil && fl.Name != "config" {
				return nil
			}
			return fmt.Errorf("%s: unknown option of herald %s (see herald %s -h or docs/CONFIG.md)", key, c.name, c.name)
		}
	}
	return fmt.Errorf("%s: unknown option: no herald command has it (see docs/CONFIG.md)", key)
}

var envRefRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// interpolate replaces ${NAME} and ${NAME:default} with the environment
// variable NAME, or default when NAME is unset or empty; $${ is a literal
// ${. ${NAME} with NAME unset or empty is an error naming NAME.
func interpolate(s string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' { // $${: a literal ${
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in %q", s[i:])
		}
		ref := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(ref, ":")
		if !envRefRE.MatchString(name) {
			return "", fmt.Errorf("${%s}: %q is not an environment variable name", ref, name)
		}
		v := os.Getenv(name)
		if v == "" {
			if !hasDef {
				return "", fmt.Errorf("${%s}: environment variable %s is not set and has no default (write ${%s:default})", ref, name, name)
			}
			v = def
		}
		b.WriteString(v)
		s = s[i+end+1:]
	}
}

// printConfig writes the effective value of every option of f as a config
// file for command cmd, secrets masked, each line commented with its source.
func (f *flags) printConfig(w io.Writer) {
	var rows [][3]string
	f.VisitAll(func(fl *flag.Flag) {
		if fl.Name == "config" || fl.Name == "dry-run" {
			return
		}
		v := fl.Value.String()
		if m := f.masks[fl.Name]; m != nil {
			v = m(v)
		}
		rows = append(rows, [3]string{fl.Name, yamlScalar(v), f.source(fl.Name)})
	})
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0])+len(r[1])+2)
	}
	fmt.Fprintf(w, "# herald %s: effective configuration (flags > HERALD_* environment > -config file > defaults); secrets masked\n", f.cmd)
	fmt.Fprintf(w, "%s:\n", f.cmd)
	for _, r := range rows {
		line := r[0] + ": " + r[1]
		fmt.Fprintf(w, "  %-*s  # %s\n", width, line, r[2])
	}
}

// yamlScalar quotes v when YAML would not read it back as the same string.
func yamlScalar(v string) string {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("k: "+v), &n); err == nil && len(n.Content) > 0 {
		m := n.Content[0]
		if len(m.Content) == 2 && m.Content[1].Kind == yaml.ScalarNode && m.Content[1].Value == v &&
			m.Content[1].Style == 0 && v != "" && !strings.ContainsAny(v, "#'\"") {
			return v
		}
	}
	return strconv.Quote(v)
}

// writeConfigDocs writes docs/CONFIG.md: every option of every
// config-reading command, with its environment variable and default.
func writeConfigDocs(w io.Writer) {
	var b bytes.Buffer
	b.WriteString(`# Configuration reference

<!-- Generated by "herald config docs > docs/CONFIG.md" (make docs); a test fails when it is stale. -->

Every option is a flag of a ` + "`herald`" + ` command. The same option can be set, highest
precedence first:

1. on the command line: ` + "`-kafka.brokers b1:9092,b2:9092`" + `;
2. in the environment: ` + "`HERALD_KAFKA_BROKERS`" + ` (upper case, dots and dashes as underscores);
3. in the YAML file given with ` + "`-config`" + ` (or ` + "`HERALD_CONFIG`" + `);
4. else the default below.

## The config file

Keys are option names, flat or nested, in kebab or snake case; lists are
comma-joined. These three set the same options:

` + "```yaml" + `
kafka.brokers: [b1:9092, b2:9092]
kafka.sasl.mechanism: SCRAM-SHA-512
` + "```" + `

` + "```yaml" + `
kafka:
  brokers: [b1:9092, b2:9092]
  sasl: {mechanism: SCRAM-SHA-512}
` + "```" + `

A top-level key named after a command (` + "`ingest:`, `segmenter:`, `dispatcher:`, `analytics:`,\n`wasim:`, `broker:`, `migrate:`, `report:`" + `) is a section only that command reads; it wins over
the same option at the top level. One file can so serve every stage (see
` + "`deploy/herald.yaml`" + `):

` + "```yaml" + `
kafka:
  brokers: ${KAFKA_BROKERS:redpanda:9092}
ingest:
  http.addr: 0.0.0.0:8080          # -http.addr of herald ingest only
  max_body: 2097152                 # -ingest.max-body (the section prefix may be left out)
segmenter:
  http: {addr: 0.0.0.0:8081}
` + "```" + `

A key that is an option of no command is an error naming the key and its line;
an option of another command is ignored by the commands that lack it.

Values may read the environment: ` + "`${NAME}`" + ` is the variable NAME (an error when it is unset
or empty), ` + "`${NAME:default}`" + ` falls back to default, ` + "`$${`" + ` is a literal ` + "`${`" + `. Only the
file is interpolated; flags and HERALD_* variables are taken as they are.

## Secrets

Secret options (` + "`kafka.sasl.password`, `clickhouse.password`" + `) have a ` + "`-file`" + ` twin naming a file
that holds the secret (a Kubernetes Secret or compose secret mount; one trailing
newline is trimmed): ` + "`-kafka.sasl.password-file /run/secrets/kafka`" + ` or
` + "`HERALD_KAFKA_SASL_PASSWORD_FILE`" + `. Setting both is an error. Secrets are never logged;
` + "`herald config print`" + ` shows them as ` + "`<redacted>`" + ` and the ClickHouse DSN without its password.
App credentials (API tokens, Meta app secrets, access tokens) live in the apps
file as ` + "`env:NAME`" + ` or ` + "`file:/path`" + ` references (` + "`deploy/apps.example.yaml`" + `).

## Checking a configuration

- ` + "`herald config validate -config herald.yaml`" + `: checks the file for ingest, segmenter,
  dispatcher and analytics (` + "`-command wasim`" + ` for one command), the environment included:
  unknown keys, values that do not parse, files it names (apps, keywords, rate card,
  TLS certificates, secrets) that cannot be read or are invalid. Exit code 1 on any error.
- ` + "`herald <stage> -config herald.yaml -dry-run`" + `: the same check for one stage, then exit.
- ` + "`herald config print -config herald.yaml [-command ingest]`" + `: the effective value of every
  option and where it came from (flag, env, file, default), secrets masked.

`)
	for _, c := range configCommands() {
		fs := c.flagSet()
		fmt.Fprintf(&b, "## herald %s\n\n%s\n\n", c.name, commands[c.name].summary)
		b.WriteString("| option | environment | default | description |\n|---|---|---|---|\n")
		fs.VisitAll(func(fl *flag.Flag) {
			def := fl.DefValue
			if def == "" {
				def = " "
			} else {
				def = "`" + def + "`"
			}
			fmt.Fprintf(&b, "| `-%s` | `%s` | %s | %s |\n", fl.Name, envName(fl.Name), def, strings.ReplaceAll(fl.Usage, "|", `\|`))
		})
		b.WriteString("\n")
	}
	b.WriteString("`herald dev`, `demo`, `bench`, `loadgen` and `schema` are development tools: `herald <command> -h` lists their flags.\n")
	_, _ = w.Write(b.Bytes())
}

package check

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// grafanaVars are the Grafana variables the dashboard may use, replaced
// by a value of the same type before parsing.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h")

// selector is one metric selector of an expression.
type selector struct {
	name   string
	labels []string
}

// selectors parses expr with Prometheus' PromQL parser and returns its
// metric selectors (name and the label names it matches or groups by).
func selectors(expr string) ([]selector, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return nil, err
	}
	var out []selector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if v, ok := n.(*parser.VectorSelector); ok {
			s := selector{name: v.Name}
			for _, m := range v.LabelMatchers {
				if m.Name == labels.MetricName {
					if m.Type != labels.MatchEqual {
						s.name = "" // a regex over names: reported below
					} else {
						s.name = m.Value
					}
					continue
				}
				s.labels = append(s.labels, m.Name)
			}
			out = append(out, s)
		}
		return nil
	})
	for i := range out {
		if out[i].name == "" {
			return nil, fmt.Errorf("%q: select metrics by name, not by a __name__ regex (the check could not verify them)", expr)
		}
	}
	return out, nil
}

// checkExpr reports the problems of one PromQL expression.
func checkExpr(all map[string]*metric, expr string) []string {
	sels, err := selectors(expr)
	if err != nil {
		return []string{"does not parse: " + err.Error()}
	}
	var problems []string
	for _, s := range sels {
		if msg := checkMetric(all, s.name, s.labels); msg != "" {
			problems = append(problems, msg)
		}
	}
	if len(sels) == 0 {
		problems = append(problems, "uses no metric")
	}
	return problems
}

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int     `json:"id"`
	Type       string  `json:"type"`
	Title      string  `json:"title"`
	Datasource *dsRef  `json:"datasource"`
	GridPos    gridPos `json:"gridPos"`
	Targets    []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		RawSQL     string `json:"rawSql"`
		Datasource *dsRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct{ H, W, X, Y int }

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "grafana", "dashboards", "herald.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("herald.json does not load: %v", err)
	}
	return d
}

// provisionedDatasources returns the uid -> type of the provisioned data
// sources.
func provisionedDatasources(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "grafana", "provisioning", "datasources", "datasources.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, Access, URL string
			IsDefault                    bool           `yaml:"isDefault"`
			JSONData                     map[string]any `yaml:"jsonData"`
			SecureJSONData               map[string]any `yaml:"secureJsonData"`
		} `yaml:"datasources"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("datasources.yaml: %v", err)
	}
	out := map[string]string{}
	for _, d := range doc.Datasources {
		out[d.UID] = d.Type
	}
	return out
}

// TestDashboard: the dashboard loads, every panel's data source is
// provisioned, every PromQL query parses and uses only metrics and labels
// Herald registers, the ClickHouse queries read existing tables, and the
// panels the operators need are there.
func TestDashboard(t *testing.T) {
	all := registered(t)
	d := loadDashboard(t)
	ds := provisionedDatasources(t)
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q title %q with %d panels", d.UID, d.Title, len(d.Panels))
	}
	tables := migrationTables(t)
	ids := map[int]bool{}
	var titles []string
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		titles = append(titles, strings.ToLower(p.Title))
		if p.Type == "row" {
			continue
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Datasource == nil || ds[p.Datasource.UID] != p.Datasource.Type {
			t.Errorf("panel %q: data source %+v is not provisioned (have %v)", p.Title, p.Datasource, ds)
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			queries++
			switch p.Datasource.Type {
			case "prometheus":
				for _, problem := range checkExpr(all, q.Expr) {
					t.Errorf("panel %q query %s %q: %s", p.Title, q.RefID, q.Expr, problem)
				}
			case "grafana-clickhouse-datasource":
				for _, tbl := range regexp.MustCompile(`(?i)\bFROM\s+([a-z_]+)`).FindAllStringSubmatch(q.RawSQL, -1) {
					if !tables[tbl[1]] {
						t.Errorf("panel %q reads table %s, which no migration creates", p.Title, tbl[1])
					}
				}
			}
		}
	}
	for _, want := range []string{
		"ingest rate", "segmenter lag", "sends by status", "sender", "limiter wait", "breaker", "in-doubt", "sink lag",
		"refusals", "suppressions", "tier",
	} {
		found := false
		for _, title := range titles {
			found = found || strings.Contains(title, want)
		}
		if !found {
			t.Errorf("no panel title contains %q", want)
		}
	}
	t.Logf("%d panels, %d queries checked against %d registered metrics", len(d.Panels), queries, len(all))
}

// migrationTables are the tables analytics' migrations create.
func migrationTables(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "analytics", "migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations: %v", err)
	}
	out := map[string]bool{}
	re := regexp.MustCompile(`(?i)CREATE TABLE IF NOT EXISTS\s+([a-z_]+)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
	}
	return out
}

// rulesFile is a Prometheus rule file, strictly.
type rulesFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRules: the rule file parses strictly, every expression is valid
// PromQL over metrics Herald registers, every alert has a severity, a
// summary and a runbook section in docs/OPERATIONS.md, and the alerts the
// operators need exist.
func TestAlertRules(t *testing.T) {
	all := registered(t)
	b, err := os.ReadFile(filepath.Join("..", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	ops, err := os.ReadFile(filepath.Join("..", "..", "docs", "OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(ops))
	names := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: a name and rules are required", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without alert name (recording rules are not expected here)", g.Name)
				continue
			}
			if names[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			names[r.Alert] = true
			for _, problem := range checkExpr(all, r.Expr) {
				t.Errorf("alert %s: %s", r.Alert, problem)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s: no summary", r.Alert)
			}
			rb := r.Annotations["runbook"]
			anchor, ok := strings.CutPrefix(rb, "docs/OPERATIONS.md#")
			if !ok || !anchors[anchor] {
				t.Errorf("alert %s: runbook %q is not a section of docs/OPERATIONS.md", r.Alert, rb)
			}
		}
	}
	for _, want := range []string{
		"HeraldConsumerLagGrowing", "HeraldBreakerOpen", "HeraldInDoubtSends", "HeraldDeadLetters", "HeraldSinkBehind",
		"HeraldTierHeadroomLow", "HeraldPreflightRefusals", "HeraldOptOutsSurging",
	} {
		if !names[want] {
			t.Errorf("alert %s missing", want)
		}
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	t.Logf("alerts: %s", strings.Join(list, ", "))
}

// markdownAnchors returns GitHub's anchors of a document's headings.
func markdownAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		out[b.String()] = true
	}
	return out
}

// TestPromQLCheckCanFail: the expression check rejects what it must.
func TestPromQLCheckCanFail(t *testing.T) {
	all := registered(t)
	f := func(expr string, ok bool) {
		t.Helper()
		problems := checkExpr(all, expr)
		if ok != (len(problems) == 0) {
			t.Errorf("checkExpr(%q) = %v, want ok=%v", expr, problems, ok)
		}
	}
	f(`sum by (state) (rate(herald_dispatcher_sends_total[$__rate_interval]))`, true)
	f(`max by (group) (herald_kafka_consumer_group_lag{group="herald-analytics"})`, true)
	f(`histogram_quantile(0.99, sum by (le) (rate(herald_analytics_insert_duration_seconds_bucket{table="events"}[5m])))`, true)
	f(`rate(herald_dispatcher_sends_totl[5m])`, false)              // misspelt
	f(`rate(herald_dispatcher_sends_total{sender="x"}[5m])`, false) // no such label
	f(`sum(rate(herald_dispatcher_sends_total[5m])`, false)         // unbalanced
	f(`{__name__=~"herald_.*_dead_letters_total"}`, false)          // unverifiable
}

package check

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/analytics"
	"github.com/heraldhq/herald/dispatcher"
	"github.com/heraldhq/herald/ingest"
	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/service"
	"github.com/heraldhq/herald/segmenter"
)

// metric is one registered metric family: its label names and whether it
// is a histogram or summary (queried as _bucket, _sum, _count).
type metric struct {
	labels    map[string]bool
	histogram bool
}

// recorder is a prometheus.Registerer that records what is registered,
// children or not (a Registry's Gather omits vectors without children).
type recorder struct {
	mu      sync.Mutex
	metrics map[string]*metric
}

var _ prometheus.Registerer = (*recorder)(nil)

var (
	descNameRE   = regexp.MustCompile(`^Desc\{fqName: "([^"]*)"`)
	descLabelsRE = regexp.MustCompile(`variableLabels: \{([^}]*)\}\}$`)
)

func (r *recorder) Register(c prometheus.Collector) error {
	hist := false
	switch c.(type) {
	case prometheus.Histogram, *prometheus.HistogramVec, prometheus.Summary, *prometheus.SummaryVec:
		hist = true
	}
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		s := d.String()
		name := descNameRE.FindStringSubmatch(s)
		if name == nil {
			continue
		}
		m := &metric{labels: map[string]bool{}, histogram: hist}
		if l := descLabelsRE.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, n := range strings.Split(l[1], ",") {
				m.labels[strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(n), "c("), ")")] = true
			}
		}
		r.metrics[name[1]] = m
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return true }

const testApps = `apps:
  - id: ABCDE-12345
    api_token: check-api-token-0123456789
    segment_write_key: check-write-key
    whatsapp:
      phone_number_ids: ["106540352242922"]
      waba_id: "102290129340398"
      access_token: EAAGcheck
      app_secret: check-app-secret
      verify_token: check-verify
`

// registered builds every stage the way `herald <stage>` does (without
// connecting anywhere) on a recorder, and returns every metric a Herald
// process can expose, by name.
func registered(t *testing.T) map[string]*metric {
	t.Helper()
	rec := &recorder{metrics: map[string]*metric{}}
	kcfg := kafka.Config{Brokers: []string{"127.0.0.1:1"}}
	if err := kcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "apps.yaml")
	if err := os.WriteFile(path, []byte(testApps), 0o600); err != nil {
		t.Fatal(err)
	}
	reg, err := apps.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kcfg.Opts(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("building %s: %v", what, err)
		}
	}
	_, err = ingest.New(ingest.Config{}, reg, cl, nil, rec)
	must("ingest", err)
	view, err := ingest.NewTagView(ingest.TagViewConfig{}, kcfg, nil, rec)
	must("ingest tag view", err)
	t.Cleanup(view.Close)
	seg, err := segmenter.New(segmenter.Config{}, kcfg, nil, rec)
	must("segmenter", err)
	t.Cleanup(seg.Close)
	disp, err := dispatcher.New(dispatcher.Config{WhatsAppBaseURL: "http://127.0.0.1:1"}, kcfg, reg, nil, rec)
	must("dispatcher", err)
	t.Cleanup(disp.Close)
	sch, err := dispatcher.NewScheduler(dispatcher.SchedulerConfig{}, kcfg, nil, rec)
	must("scheduler", err)
	t.Cleanup(sch.Close)
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{"127.0.0.1:1"}})
	must("clickhouse connection", err)
	t.Cleanup(func() { conn.Close() })
	sink, err := analytics.New(analytics.Config{}, kcfg, conn, nil, rec)
	must("analytics", err)
	t.Cleanup(sink.Close)
	must("lag collector", rec.Register(kafka.NewLagCollector(cl, "herald-segmenter")))

	// The Go and process collectors every ops endpoint has.
	fams, err := service.NewOps().Registry.Gather()
	must("ops registry", err)
	for _, f := range fams {
		m := &metric{labels: map[string]bool{}}
		for _, mm := range f.Metric {
			for _, l := range mm.Label {
				m.labels[l.GetName()] = true
			}
		}
		rec.metrics[f.GetName()] = m
	}
	// Prometheus' own series about each scrape target.
	rec.metrics["up"] = &metric{labels: map[string]bool{}}
	if len(rec.metrics) < 40 {
		t.Fatalf("only %d metrics registered: the recorder is broken", len(rec.metrics))
	}
	return rec.metrics
}

// targetLabels are the labels Prometheus adds to every series of a Herald
// target (deploy/prometheus/prometheus.yml, the Kubernetes relabelling).
var targetLabels = map[string]bool{"job": true, "instance": true, "stage": true, "namespace": true, "pod": true}

// checkMetric reports why name with the given label names is not
// something Herald exposes, or "".
func checkMetric(all map[string]*metric, name string, labels []string) string {
	m, ok := all[name]
	if !ok {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, cut := strings.CutSuffix(name, suffix); cut {
				if b, found := all[base]; found && b.histogram {
					m, ok = b, true
					if suffix == "_bucket" {
						m = &metric{labels: map[string]bool{"le": true}}
						for l := range b.labels {
							m.labels[l] = true
						}
					}
				}
			}
		}
	}
	if !ok {
		return "no Herald stage registers metric " + name
	}
	var bad []string
	for _, l := range labels {
		if !m.labels[l] && !targetLabels[l] && l != "__name__" {
			bad = append(bad, l)
		}
	}
	if len(bad) > 0 {
		have := make([]string, 0, len(m.labels))
		for l := range m.labels {
			have = append(have, l)
		}
		sort.Strings(have)
		return name + " has no label " + strings.Join(bad, ", ") + " (it has " + strings.Join(have, ", ") + ")"
	}
	return ""
}

// TestRecorderSeesEveryStage: the registry the checks compare against is
// not empty per stage (a broken recorder would make every check pass).
func TestRecorderSeesEveryStage(t *testing.T) {
	all := registered(t)
	for _, name := range []string{
		"herald_ingest_requests_total", "herald_segmenter_events_total", "herald_dispatcher_sends_total",
		"herald_scheduler_pending", "herald_analytics_rows_inserted_total", "herald_kafka_consumer_group_lag",
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if _, ok := all[name]; !ok {
			t.Errorf("%s not registered", name)
		}
	}
	if msg := checkMetric(all, "herald_dispatcher_sends_total", []string{"state", "channel"}); msg != "" {
		t.Error(msg)
	}
	if msg := checkMetric(all, "herald_dispatcher_sends_total", []string{"sender"}); msg == "" {
		t.Error("a label the metric lacks was accepted")
	}
	if msg := checkMetric(all, "herald_dispatcher_limiter_wait_seconds_bucket", []string{"le"}); msg != "" {
		t.Error(msg)
	}
	if msg := checkMetric(all, "herald_dispatcher_sends_total_bucket", nil); msg == "" {
		t.Error("_bucket of a counter was accepted")
	}
	if msg := checkMetric(all, "herald_nope_total", nil); msg == "" {
		t.Error("an unknown metric was accepted")
	}
}

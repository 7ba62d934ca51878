package check

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// loadCompose loads deploy/docker-compose.yml the way `docker compose`
// does: the Compose specification's JSON schema, interpolation with the
// file's defaults, merge keys, paths resolved against deploy/.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join("..", "docker-compose.yml")},
		cli.WithWorkingDirectory(".."), cli.WithName("herald"), cli.WithResolvedPaths(true), cli.WithConsistency(true))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

// TestCompose: the compose file validates against the Compose schema and
// has what the demo needs: each stage its own service of the one image
// built by the Dockerfile, stop grace longer than the drain, health checks,
// Prometheus scraping every stage, Grafana provisioned.
func TestCompose(t *testing.T) {
	p := loadCompose(t)
	svc := func(name string) types.ServiceConfig {
		t.Helper()
		s, err := p.GetService(name)
		if err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
		return s
	}
	for _, name := range []string{"redpanda", "clickhouse", "prometheus", "grafana"} {
		s := svc(name)
		if tag := s.Image[strings.LastIndex(s.Image, ":")+1:]; !strings.Contains(s.Image, ":") || tag == "latest" {
			t.Errorf("%s: image %q must be pinned to a version", name, s.Image)
		}
	}
	image := ""
	for _, name := range []string{"ingest", "segmenter", "dispatcher", "analytics", "wasim", "migrate"} {
		s := svc(name)
		if image == "" {
			image = s.Image
		}
		if s.Image != image || s.Build == nil || s.Build.Dockerfile != "Dockerfile" {
			t.Errorf("%s: every Herald service runs the one image built from the Dockerfile (image %q, build %+v)", name, s.Image, s.Build)
		} else if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
			t.Errorf("%s: build: %v", name, err)
		}
		if len(s.Command) == 0 || s.Command[0] != name {
			t.Errorf("%s: command %v must start with the subcommand %q", name, s.Command, name)
		}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s mounts %s: %v", name, v.Source, err)
				}
			}
		}
		if name == "migrate" || name == "wasim" {
			continue
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= 30*time.Second {
			t.Errorf("%s: stop_grace_period must exceed shutdown.timeout (30s)", name)
		}
		if s.HealthCheck == nil || s.HealthCheck.Disable || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), "/readyz") {
			t.Errorf("%s: a health check on /readyz is required", name)
		}
	}
	for _, s := range []string{"clickhouse_password"} {
		sec, ok := p.Secrets[s]
		if !ok {
			t.Fatalf("secret %s missing", s)
		}
		if _, err := os.Stat(sec.File); err != nil {
			t.Errorf("secret %s: %v", s, err)
		}
	}
	if dep, ok := svc("analytics").DependsOn["migrate"]; !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("analytics must wait for migrate to complete")
	}

	// Prometheus scrapes every stage's ops port.
	var prom struct {
		Global        map[string]string `yaml:"global"`
		RuleFiles     []string          `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile(filepath.Join("..", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&prom); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	targets := map[string]string{}
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				targets[tg] = sc.JobName + "/" + st.Labels["stage"]
			}
		}
	}
	for _, stage := range []string{"ingest", "segmenter", "dispatcher", "analytics"} {
		if targets[stage+":9100"] != "herald/"+stage {
			t.Errorf("prometheus.yml does not scrape %s:9100 in job herald with label stage=%s", stage, stage)
		}
	}
	mounted := map[string]bool{}
	for _, v := range svc("prometheus").Volumes {
		mounted[v.Target] = true
	}
	for _, rf := range prom.RuleFiles {
		if !mounted[rf] {
			t.Errorf("prometheus.yml rule file %s is not mounted into the prometheus service", rf)
		}
	}
}

// TestComposeCheckCanFail: a compose file outside the schema does not load.
func TestComposeCheckCanFail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "compose.yml")
	if err := os.WriteFile(path, []byte("services:\n  a:\n    image: x:1\n    stop_grace_perod: 45s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithWorkingDirectory(dir), cli.WithName("t"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "stop_grace_perod") {
		t.Fatalf("a misspelt service key: err = %v", err)
	}
}

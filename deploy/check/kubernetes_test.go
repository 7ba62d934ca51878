package check

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	yaml3 "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/heraldhq/herald/schemas"
)

const k8sDir = "../kubernetes"

// scaledObject is the part of KEDA's keda.sh/v1alpha1 ScaledObject Herald
// uses, decoded strictly: a misspelt field fails like on the API server.
type scaledObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		ScaleTargetRef struct {
			Name       string `json:"name"`
			Kind       string `json:"kind,omitempty"`
			APIVersion string `json:"apiVersion,omitempty"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

// triggerAuthentication is KEDA's keda.sh/v1alpha1 TriggerAuthentication
// (the secretTargetRef form).
type triggerAuthentication struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// kustomization is kustomize's Kustomization, the fields used.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images"`
}

// manifests are the decoded objects of deploy/kubernetes.
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	configMaps  []*corev1.ConfigMap
	secrets     []*corev1.Secret // the example Secret
	scaled      []*scaledObject
	triggerAuth []*triggerAuthentication
	namespaces  []*corev1.Namespace
}

// splitDocs splits a multi-document YAML file.
func splitDocs(b []byte) ([][]byte, error) {
	dec := yaml3.NewDecoder(bytes.NewReader(b))
	var out [][]byte
	for {
		var n yaml3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		doc, err := yaml3.Marshal(&n)
		if err != nil {
			return nil, err
		}
		out = append(out, doc)
	}
}

// decodeObject decodes one manifest strictly into its Kubernetes type by
// apiVersion and kind.
func decodeObject(m *manifests, doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	strict := func(into any) error { return yaml.UnmarshalStrict(doc, into) }
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		m.deployments = append(m.deployments, o)
		return strict(o)
	case "v1 Service":
		o := &corev1.Service{}
		m.services = append(m.services, o)
		return strict(o)
	case "policy/v1 PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		m.pdbs = append(m.pdbs, o)
		return strict(o)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		o := &autoscalingv2.HorizontalPodAutoscaler{}
		m.hpas = append(m.hpas, o)
		return strict(o)
	case "v1 ConfigMap":
		o := &corev1.ConfigMap{}
		m.configMaps = append(m.configMaps, o)
		return strict(o)
	case "v1 Secret":
		o := &corev1.Secret{}
		m.secrets = append(m.secrets, o)
		return strict(o)
	case "v1 Namespace":
		o := &corev1.Namespace{}
		m.namespaces = append(m.namespaces, o)
		return strict(o)
	case "keda.sh/v1alpha1 ScaledObject":
		o := &scaledObject{}
		m.scaled = append(m.scaled, o)
		return strict(o)
	case "keda.sh/v1alpha1 TriggerAuthentication":
		o := &triggerAuthentication{}
		m.triggerAuth = append(m.triggerAuth, o)
		return strict(o)
	}
	return fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
}

// loadManifests decodes the kustomization's resources (and the example
// Secret), failing on any field the API does not know.
func loadManifests(t *testing.T) (*manifests, kustomization) {
	t.Helper()
	var k kustomization
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %s %s", k.APIVersion, k.Kind)
	}
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && base != "secret.example.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml resources", base)
		}
	}
	m := &manifests{}
	for _, r := range append(slices.Clone(k.Resources), "secret.example.yaml") {
		b, err := os.ReadFile(filepath.Join(k8sDir, r))
		if err != nil {
			t.Fatalf("kustomization resource %s: %v", r, err)
		}
		docs, err := splitDocs(b)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		for i, doc := range docs {
			if err := decodeObject(m, doc); err != nil {
				t.Errorf("%s, document %d: %v", r, i+1, err)
			}
		}
	}
	return m, k
}

// heraldConfig is the herald.yaml of the ConfigMap, the options read here.
func heraldConfig(t *testing.T, m *manifests) (partitions int, shutdown time.Duration) {
	t.Helper()
	for _, cm := range m.configMaps {
		src, ok := cm.Data["herald.yaml"]
		if !ok {
			continue
		}
		var doc struct {
			Kafka struct {
				Partitions int `yaml:"partitions"`
			} `yaml:"kafka"`
			Shutdown string `yaml:"shutdown.timeout"`
		}
		if err := yaml3.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatalf("ConfigMap %s herald.yaml: %v", cm.Name, err)
		}
		d, err := time.ParseDuration(doc.Shutdown)
		if err != nil || doc.Kafka.Partitions <= 0 {
			t.Fatalf("ConfigMap %s herald.yaml: kafka.partitions %d, shutdown.timeout %q: both must be set", cm.Name, doc.Kafka.Partitions, doc.Shutdown)
		}
		return doc.Kafka.Partitions, d
	}
	t.Fatal("no ConfigMap holds herald.yaml")
	return 0, 0
}

// stages are the Deployments Herald needs, with the consumer group and
// topic KEDA scales them on (none: not lag-scaled).
var stages = map[string]struct{ group, topic string }{
	"herald-ingest":     {},
	"herald-segmenter":  {segmenterGroup, schemas.TopicEvents},
	"herald-dispatcher": {"herald-dispatcher", schemas.TopicDispatch},
	"herald-analytics":  {},
}

const segmenterGroup = "herald-segmenter"

// TestKubernetesManifests: every manifest decodes strictly into its API
// type, and the objects fit together the way Herald needs.
func TestKubernetesManifests(t *testing.T) {
	m, k := loadManifests(t)
	if t.Failed() {
		t.FailNow()
	}
	partitions, shutdown := heraldConfig(t, m)
	secretKeys := map[string]bool{}
	for _, s := range m.secrets {
		for key := range s.StringData {
			secretKeys[key] = true
		}
	}
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range m.configMaps {
		cms[cm.Name] = cm
	}
	if k.Namespace == "" || len(m.namespaces) != 1 || m.namespaces[0].Name != k.Namespace {
		t.Errorf("kustomization namespace %q and the Namespace object must agree", k.Namespace)
	}
	deps := map[string]*appsv1.Deployment{}
	for _, d := range m.deployments {
		deps[d.Name] = d
		for _, problem := range checkDeployment(d, shutdown, secretKeys, cms) {
			t.Errorf("Deployment %s: %s", d.Name, problem)
		}
	}
	for name := range stages {
		if deps[name] == nil {
			t.Errorf("no Deployment %s", name)
		}
	}
	for _, s := range m.services {
		if d := matching(s.Spec.Selector, m.deployments); d == nil {
			t.Errorf("Service %s selects no Deployment", s.Name)
		} else {
			ports := containerPorts(d)
			for _, p := range s.Spec.Ports {
				if !ports[p.TargetPort.String()] {
					t.Errorf("Service %s port %s targets %s, not a port of %s", s.Name, p.Name, p.TargetPort.String(), d.Name)
				}
			}
		}
	}
	for name, d := range deps {
		var pdb *policyv1.PodDisruptionBudget
		for _, p := range m.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			if err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				pdb = p
			}
		}
		if pdb == nil {
			t.Errorf("Deployment %s has no PodDisruptionBudget", name)
		} else if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
			t.Errorf("PodDisruptionBudget %s: set exactly one of minAvailable and maxUnavailable", pdb.Name)
		}
	}
	auths := map[string]*triggerAuthentication{}
	for _, a := range m.triggerAuth {
		auths[a.Metadata.Name] = a
		for _, ref := range a.Spec.SecretTargetRef {
			if !secretKeys[ref.Key] {
				t.Errorf("TriggerAuthentication %s: key %s is not in secret.example.yaml", a.Metadata.Name, ref.Key)
			}
		}
	}
	scaled := map[string]bool{}
	for _, so := range m.scaled {
		name := so.Spec.ScaleTargetRef.Name
		scaled[name] = true
		for _, problem := range checkScaledObject(so, deps[name], partitions, auths) {
			t.Errorf("ScaledObject %s: %s", so.Metadata.Name, problem)
		}
	}
	for name, s := range stages {
		if s.group != "" && !scaled[name] {
			t.Errorf("%s has no KEDA ScaledObject", name)
		}
	}
	for _, h := range m.hpas {
		if scaled[h.Spec.ScaleTargetRef.Name] {
			t.Errorf("HorizontalPodAutoscaler %s and a ScaledObject both scale %s", h.Name, h.Spec.ScaleTargetRef.Name)
		}
		if deps[h.Spec.ScaleTargetRef.Name] == nil {
			t.Errorf("HorizontalPodAutoscaler %s scales %s, not a Deployment here", h.Name, h.Spec.ScaleTargetRef.Name)
		}
	}
}

// checkDeployment returns what is wrong with one stage's Deployment.
func checkDeployment(d *appsv1.Deployment, shutdown time.Duration, secretKeys map[string]bool, cms map[string]*corev1.ConfigMap) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		add("selector %v does not match the pod template's labels %v", d.Spec.Selector, d.Spec.Template.Labels)
	}
	pod := d.Spec.Template.Spec
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= shutdown+5*time.Second {
		add("terminationGracePeriodSeconds must exceed shutdown.timeout (%s) plus the preStop sleep", shutdown)
	}
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		add("the pod must set runAsNonRoot")
	}
	if d.Spec.Template.Annotations["prometheus.io/scrape"] != "true" || d.Spec.Template.Annotations["prometheus.io/port"] != "9100" {
		add("prometheus.io/scrape and prometheus.io/port (9100) annotations are required")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if v.ConfigMap != nil && cms[v.ConfigMap.Name] == nil {
			add("volume %s: ConfigMap %s is not defined", v.Name, v.ConfigMap.Name)
		}
	}
	stage := strings.TrimPrefix(d.Name, "herald-")
	all := append(slices.Clone(pod.InitContainers), pod.Containers...)
	for i, c := range all {
		isInit := i < len(pod.InitContainers)
		img := c.Image
		if at := strings.LastIndex(img, "@sha256:"); at < 0 {
			colon := strings.LastIndex(img, ":")
			if colon < strings.LastIndex(img, "/") || colon < 0 || img[colon+1:] == "latest" {
				add("container %s: image %q must name a version (not latest)", c.Name, img)
			}
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			add("container %s: cpu and memory requests and a memory limit are required", c.Name)
		}
		if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
			add("container %s: allowPrivilegeEscalation must be false", c.Name)
		}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				add("container %s mounts undefined volume %s", c.Name, vm.Name)
			}
		}
		for _, e := range c.Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && !secretKeys[r.SecretKeyRef.Key] {
				add("container %s env %s: key %s is not in secret.example.yaml", c.Name, e.Name, r.SecretKeyRef.Key)
			}
		}
		if isInit {
			continue
		}
		if len(c.Args) == 0 || c.Args[0] != stage {
			add("container %s: args must start with the subcommand %q, got %v", c.Name, stage, c.Args)
		}
		ports := containerPorts(d)
		for probe, want := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
			if want == nil || want.HTTPGet == nil || want.HTTPGet.Path != probe || !ports[want.HTTPGet.Port.String()] {
				add("container %s: an HTTP probe on %s at a declared port is required", c.Name, probe)
			}
		}
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
			add("container %s: a preStop hook is required (endpoints drain before SIGTERM)", c.Name)
		}
	}
	return out
}

// checkScaledObject returns what is wrong with one ScaledObject.
func checkScaledObject(so *scaledObject, d *appsv1.Deployment, partitions int, auths map[string]*triggerAuthentication) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	name := so.Spec.ScaleTargetRef.Name
	want, ok := stages[name]
	if d == nil || !ok || want.group == "" {
		return []string{"scales " + name + ", which is not a lag-scaled Herald stage"}
	}
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
		add("minReplicaCount must be at least 1 (the stage must always consume)")
	}
	if so.Spec.MaxReplicaCount == nil || int(*so.Spec.MaxReplicaCount) > partitions || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
		add("maxReplicaCount must be between minReplicaCount and kafka.partitions (%d): replicas past the partition count own nothing", partitions)
	}
	if len(so.Spec.Triggers) != 1 {
		return append(out, "exactly one trigger, the Kafka lag of the stage's group, is expected")
	}
	tr := so.Spec.Triggers[0]
	md := tr.Metadata
	if tr.Type != "kafka" {
		add("trigger type %q, want kafka", tr.Type)
	}
	if md["consumerGroup"] != want.group || md["topic"] != want.topic {
		add("trigger reads group %q topic %q, want %q %q", md["consumerGroup"], md["topic"], want.group, want.topic)
	}
	if md["bootstrapServers"] == "" {
		add("bootstrapServers is required")
	}
	if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n <= 0 {
		add("lagThreshold %q must be a positive number", md["lagThreshold"])
	}
	if md["allowIdleConsumers"] != "false" {
		add("allowIdleConsumers must be \"false\": KEDA then caps replicas at the partition count")
	}
	if tr.AuthenticationRef == nil || auths[tr.AuthenticationRef.Name] == nil {
		add("authenticationRef must name a TriggerAuthentication of these manifests")
	}
	return out
}

func matching(selector map[string]string, deps []*appsv1.Deployment) *appsv1.Deployment {
	if len(selector) == 0 {
		return nil
	}
	for _, d := range deps {
		if labels.SelectorFromSet(selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			return d
		}
	}
	return nil
}

func containerPorts(d *appsv1.Deployment) map[string]bool {
	out := map[string]bool{}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			out[p.Name] = true
			out[strconv.Itoa(int(p.ContainerPort))] = true
		}
	}
	return out
}

// TestKubernetesCheckCanFail: the strict decoding and the rules reject
// broken manifests.
func TestKubernetesCheckCanFail(t *testing.T) {
	m := &manifests{}
	if err := decodeObject(m, []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicaz: 2\n")); err == nil {
		t.Error("a misspelt Deployment field was accepted")
	}
	if err := decodeObject(m, []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n")); err == nil {
		t.Error("a string replica count was accepted")
	}
	if err := decodeObject(m, []byte("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  maxReplicas: 3\n")); err == nil {
		t.Error("a misspelt ScaledObject field was accepted")
	}
	good, _ := loadManifests(t)
	_, shutdown := heraldConfig(t, good)
	d := good.deployments[0].DeepCopy()
	d.Spec.Template.Spec.Containers[0].ReadinessProbe = nil
	d.Spec.Template.Spec.Containers[0].Image = "ghcr.io/heraldhq/herald:latest"
	grace := int64(10)
	d.Spec.Template.Spec.TerminationGracePeriodSeconds = &grace
	if problems := checkDeployment(d, shutdown, map[string]bool{}, map[string]*corev1.ConfigMap{}); len(problems) < 3 {
		t.Errorf("a Deployment without readiness probe, with :latest and a short grace period passed: %v", problems)
	}
	for _, so := range good.scaled {
		over := int32(1000)
		so.Spec.MaxReplicaCount = &over
		if problems := checkScaledObject(so, good.deployments[0], 16, nil); len(problems) < 2 {
			t.Errorf("a ScaledObject above the partition count without authentication passed: %v", problems)
		}
	}
}

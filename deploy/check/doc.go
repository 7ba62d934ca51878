// Package check holds the offline checks of Herald's deployment files, run
// by scripts/deploy-check.sh from make test: the Kubernetes manifests
// decode strictly into the Kubernetes API types (k8s.io/api) and KEDA's
// ScaledObject fields and satisfy Herald's rules (probes, resources,
// PodDisruptionBudgets, replica bounds no larger than the partition count);
// the compose file loads with compose-go (the Compose specification's
// schema); the Dockerfile passes the lint rules that matter (pinned bases,
// non-root numeric USER, static CGO_ENABLED=0 build, no ADD of URLs); the
// Grafana dashboard and the Prometheus rules parse (PromQL with
// Prometheus' own parser); and every metric they use is registered by a
// Herald stage (the stages' registries are built here and described).
//
// It is its own module so that Herald's go.mod does not carry Kubernetes,
// Prometheus and Compose libraries that only these checks use.
package check

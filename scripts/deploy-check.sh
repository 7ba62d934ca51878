#!/usr/bin/env bash
# Offline checks of the deployment files (part of `make test`): the
# Kubernetes manifests against the Kubernetes API types and KEDA's fields,
# the compose file against the Compose schema, the Dockerfile lint, the
# Grafana dashboard and the Prometheus rules (PromQL parsed by Prometheus'
# parser), and every metric they use against the stages' registries.
# deploy/check is its own Go module (Kubernetes, Prometheus and Compose
# libraries stay out of Herald's go.mod); the go command fetches them from
# the module proxy like any module. Its go.mod must be tidy too.
set -euo pipefail
cd "$(dirname "$0")/../deploy/check"
GO=${GO:-go}
cp go.mod /tmp/herald-check-go.mod.bak
cp go.sum /tmp/herald-check-go.sum.bak
$GO mod tidy
if ! cmp -s go.mod /tmp/herald-check-go.mod.bak || ! cmp -s go.sum /tmp/herald-check-go.sum.bak; then
	cp /tmp/herald-check-go.mod.bak go.mod
	cp /tmp/herald-check-go.sum.bak go.sum
	echo "deploy/check: go.mod/go.sum are not tidy: run 'cd deploy/check && go mod tidy' and commit" >&2
	exit 1
fi
$GO vet ./...
$GO test -count=1 ./...

# Herald. `make demo` and `make test` are all a newcomer needs; both install
# what is missing first (`make deps`).
GO       ?= go
BIN      := bin/herald
PKGS     := ./...
GOFLAGS  ?=
TESTFLAGS ?= -race -shuffle=on -timeout 20m
LINT_VERSION := v2.6.2
FUZZTIME ?= 5s

.PHONY: all deps build test fuzz test-short demo bench bench-go fmt vet lint tidy-check deploy-check docs image clean

all: build

deps:
	@./scripts/deps.sh

build:
	$(GO) build $(GOFLAGS) -o $(BIN) ./cmd/herald

# Everything, the ClickHouse-backed tests included (they start a private
# server on a free port), and the offline checks of deploy/.
test: deps tidy-check vet
	$(GO) test $(TESTFLAGS) $(PKGS)
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh
	GO=$(GO) ./scripts/deploy-check.sh

# The Kubernetes manifests, compose file, Dockerfile, dashboard and alert
# rules, checked offline (deploy/check, its own module).
deploy-check:
	GO=$(GO) ./scripts/deploy-check.sh

# docs/CONFIG.md from the flag sets (a test fails when it is stale).
docs:
	$(GO) run ./cmd/herald config docs > docs/CONFIG.md

# The container image of deploy/ (needs a Docker engine).
image:
	docker build -t herald:dev .

# Every fuzz target for FUZZTIME each (part of `make test`).
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

test-short:
	$(GO) test -short $(PKGS)

demo: deps build
	./$(BIN) demo

# herald bench: stage throughput vs a bare franz-go consumer (docs/BENCHMARKS.md).
bench: deps build
	./$(BIN) bench

# Go micro-benchmarks.
bench-go: deps
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

fmt:
	gofmt -w .

vet:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

lint:
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VERSION) run ./...

# CI fails when go.mod/go.sum are not tidy (compared with the files as they
# were, so uncommitted edits are judged too); the files are left unchanged.
tidy-check:
	@cp go.mod /tmp/herald-go.mod.bak; cp go.sum /tmp/herald-go.sum.bak
	@$(GO) mod tidy
	@if ! cmp -s go.mod /tmp/herald-go.mod.bak || ! cmp -s go.sum /tmp/herald-go.sum.bak; then \
		cp /tmp/herald-go.mod.bak go.mod; cp /tmp/herald-go.sum.bak go.sum; \
		echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit"; exit 1; fi

clean:
	rm -rf bin .herald

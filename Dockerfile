# syntax=docker/dockerfile:1
# Herald: one static binary, every stage a subcommand (herald ingest,
# segmenter, dispatcher, analytics, migrate, wasim, broker). Build:
#   docker build -t herald:dev .
# deploy/docker-compose.yml builds and runs it; deploy/kubernetes runs it.

# Build stage: the Go toolchain of go.mod, modules cached between builds.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# CGO_ENABLED=0: a static binary that runs on a base with no libc.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/herald ./cmd/herald

# Run stage: distroless static (CA certificates and tzdata for quiet hours,
# no shell, no package manager), as the unprivileged nonroot user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
# 65532 is distroless' nonroot; numeric so that Kubernetes' runAsNonRoot
# can verify it.
USER 65532:65532
# 8080 ingest HTTP, 8081 segment API, 8090 simulator, 9100 ops
# (/metrics, /healthz, /readyz).
EXPOSE 8080 8081 8090 9100
# No HEALTHCHECK here: it differs per subcommand; compose and Kubernetes
# probe each service's own ops address (herald healthcheck -url ...).
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["help"]

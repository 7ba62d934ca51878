// Package service is the plumbing every Herald process shares: the ops
// endpoints (/metrics, /healthz, /readyz), HTTP servers that shut down
// gracefully, and the process logger.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is a readiness check: nil when the dependency answers.
type Check func(ctx context.Context) error

// Ops serves /metrics from its registry, /healthz (the process is alive) and
// /readyz (every registered check passes, each within 2 s, and the process
// is not draining: see Drain).
type Ops struct {
	Registry *prometheus.Registry

	mu       sync.Mutex
	checks   map[string]Check
	draining bool
}

// NewOps returns ops endpoints with a fresh registry holding the Go and
// process collectors.
func NewOps() *Ops {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Ops{Registry: reg, checks: make(map[string]Check)}
}

// AddCheck registers a readiness check under name (e.g. "kafka").
func (o *Ops) AddCheck(name string, c Check) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.checks[name] = c
}

// Drain makes /readyz answer 503 {"status":"draining"} from now on: the
// process is shutting down, so load balancers and Kubernetes Services stop
// sending it work while it finishes what it has (/healthz stays 200).
func (o *Ops) Drain() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.draining = true
}

// Handler serves the ops endpoints.
func (o *Ops) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", o.ready)
	return mux
}

func (o *Ops) ready(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	if o.draining {
		o.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	names := make([]string, 0, len(o.checks))
	for n := range o.checks {
		names = append(names, n)
	}
	o.mu.Unlock()
	sort.Strings(names)
	out := map[string]string{}
	code := http.StatusOK
	for _, n := range names {
		o.mu.Lock()
		c := o.checks[n]
		o.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := c(ctx)
		cancel()
		if err != nil {
			out[n] = err.Error()
			code = http.StatusServiceUnavailable
			continue
		}
		out[n] = "ok"
	}
	writeJSON(w, code, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Server is an HTTP server started by Listen.
type Server struct {
	// Addr is the address it listens on (with the real port when :0 was
	// asked for).
	Addr string
	srv  *http.Server
	done chan error
}

// Listen binds addr and serves h in the background.
func Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	s := &Server{
		Addr: ln.Addr().String(),
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		done: make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// URL is http://Addr.
func (s *Server) URL() string { return "http://" + s.Addr }

// Shutdown stops accepting connections and waits for in-flight requests to
// finish, up to timeout.
func (s *Server) Shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutting down http server %s: %w", s.Addr, err)
	}
	return <-s.done
}

package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// TagView is ingest's replica of schemas.TopicTags, the compacted topic on
// which the segmenter writes every profile's current tags: it serves
// POST /json/1.3/getTags without asking another stage. Each ingest replica
// reads the whole topic from the start (no consumer group) into a
// fastcache of TagViewConfig.CacheBytes and keeps following it.
//
// Consistency: a tag set through setTags is visible to getTags once the
// segmenter has applied it and the view has read the record, typically
// milliseconds later (Pushwoosh's getTags is eventually consistent too).
// Until the view has read the topic up to the end offsets it found at
// start, getTags answers 503 with Retry-After rather than an old value.
// When the cache is full its oldest entries are evicted and getTags answers
// 404 for them: size CacheBytes for every profile's tags (the
// herald_ingest_tag_view_bytes gauge shows what is used).
//
// Metrics:
//
//	herald_ingest_tag_view_records_total{result}  TopicTags records read: stored, deleted (tombstone), invalid
//	herald_ingest_tag_view_ready                  1 once the view caught up with the topic at start
//	herald_ingest_tag_view_bytes                  bytes the view's cache holds
type TagView struct {
	cfg   TagViewConfig
	cl    *kgo.Client
	log   *slog.Logger
	cache *fastcache.Cache
	ready atomic.Bool

	records    *prometheus.CounterVec
	collectors []prometheus.Collector
	prom       prometheus.Registerer
	logInvalid throttle
}

// TagViewConfig configures a TagView.
type TagViewConfig struct {
	// CacheBytes bounds the view's memory. Default 256 MiB; fastcache
	// rounds it up to 32 MiB at least.
	CacheBytes int `yaml:"cache_bytes"`
}

const defaultTagViewBytes = 256 << 20

// Validate checks the config and fills defaults.
func (c *TagViewConfig) Validate() error {
	switch {
	case c.CacheBytes < 0:
		return fmt.Errorf("ingest: tag view cache_bytes %d is negative", c.CacheBytes)
	case c.CacheBytes == 0:
		c.CacheBytes = defaultTagViewBytes
	}
	return nil
}

// NewTagView builds a view reading TopicTags with a client of kcfg. Metrics
// are registered with prom (nil: not registered).
func NewTagView(cfg TagViewConfig, kcfg kafka.Config, log *slog.Logger, prom prometheus.Registerer) (*TagView, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := kcfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating kafka config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cl, err := kgo.NewClient(append(kcfg.Opts(log), kafka.FollowOpts(schemas.TopicTags)...)...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka client: %w", err)
	}
	v := &TagView{cfg: cfg, cl: cl, log: log.With("component", "tag_view"), cache: fastcache.New(cfg.CacheBytes)}
	v.records = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_ingest_tag_view_records_total",
		Help: "Tags topic records read by the getTags view: stored, deleted (tombstones), invalid (not stored).",
	}, []string{"result"})
	for _, r := range []string{"stored", "deleted", "invalid"} {
		v.records.WithLabelValues(r)
	}
	v.collectors = []prometheus.Collector{
		v.records,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_ingest_tag_view_ready",
			Help: "1 once the getTags view has read the tags topic up to its end at start.",
		}, func() float64 {
			if v.ready.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_ingest_tag_view_bytes",
			Help: "Bytes held by the getTags view's cache.",
		}, func() float64 {
			var s fastcache.Stats
			v.cache.UpdateStats(&s)
			return float64(s.BytesSize)
		}),
	}
	if prom != nil {
		for i, c := range v.collectors {
			if err := prom.Register(c); err != nil {
				for _, r := range v.collectors[:i] {
					prom.Unregister(r)
				}
				cl.Close()
				return nil, fmt.Errorf("registering tag view metrics: %w", err)
			}
		}
		v.prom = prom
	}
	return v, nil
}

// Ready reports whether the view has caught up with the topic as it was at
// start.
func (v *TagView) Ready() bool { return v.ready.Load() }

// Run reads the topic until ctx is done, then returns nil.
func (v *TagView) Run(ctx context.Context) error {
	kafka.Follow(ctx, v.cl, schemas.TopicTags, v.log, v.apply, func() {
		v.ready.Store(true)
		v.log.Info("tags view caught up")
	})
	return nil
}

// apply stores one record: a profile's tags, or its removal (tombstone).
func (v *TagView) apply(r *kgo.Record) {
	if r.Value == nil {
		v.cache.Del(r.Key)
		v.records.WithLabelValues("deleted").Inc()
		return
	}
	pt, err := schemas.DecodeProfileTags(r.Value)
	if err == nil && string(pt.Key()) != string(r.Key) {
		err = fmt.Errorf("record key %q is not the profile's key %q", r.Key, pt.Key())
	}
	if err != nil {
		v.records.WithLabelValues("invalid").Inc()
		if ok, n := v.logInvalid.allow(); ok {
			v.log.Error("skipping an invalid tags record", "partition", r.Partition, "offset", r.Offset, "err", err, "suppressed", n)
		}
		return
	}
	// SetBig: a profile's tags may be larger than fastcache's 64 KiB entries.
	v.cache.SetBig(r.Key, r.Value)
	v.records.WithLabelValues("stored").Inc()
}

// get returns the stored record value of key.
func (v *TagView) get(key []byte) ([]byte, bool) {
	b := v.cache.GetBig(nil, key)
	return b, len(b) > 0
}

// Close closes the client and frees the cache. Call it after Run returned.
func (v *TagView) Close() {
	v.cl.Close()
	if v.prom != nil {
		for _, c := range v.collectors {
			v.prom.Unregister(c)
		}
	}
	v.cache.Reset()
}

// ServeTags makes s answer getTags from v. Without it getTags answers 503.
func (s *Server) ServeTags(v *TagView) { s.tags = v }

// getTags is POST /json/1.3/getTags: the tags of a subscriber (hwid, or
// userId for profiles known by user id only), as the segmenter holds them.
//
//	{"request":{"application":"APP","hwid":"whatsapp:+4915123456789"}}
//	-> {"status_code":200,"status_message":"OK","response":{"result":{"City":"Berlin","Language":"de",...},"registered":true,"updated":"..."}}
func (s *Server) getTags(w *statusWriter, r *http.Request) {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	req, app, aerr := s.begin(r.Header.Get("Authorization"), body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	hwid, userID, _, aerr := identify(req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	v := s.tags
	switch {
	case v == nil:
		writeError(w, &apiError{Code: http.StatusServiceUnavailable, Msg: "getTags is not served by this ingest: it runs without the tags view"})
		return
	case !v.Ready():
		writeError(w, &apiError{Code: http.StatusServiceUnavailable, Msg: "the tags view is still reading the tags topic: retry shortly"})
		return
	}
	field := "request.hwid"
	if hwid == "" {
		field = "request.userId"
	}
	// The key starts with the app of the token: another app's profiles are
	// not reachable.
	b, ok := v.get(schemas.EventKey(app.ID, hwid, userID))
	if !ok {
		writeError(w, &apiError{Code: http.StatusNotFound, Field: field, Msg: "no profile with tags in application " + quote(app.ID)})
		return
	}
	pt, err := schemas.DecodeProfileTags(b)
	if err != nil { // apply stored only valid records
		s.log.Error("decoding a stored tags record", "err", err)
		writeError(w, &apiError{Code: http.StatusInternalServerError, Msg: "internal error"})
		return
	}
	writeOK(w, getTagsResponse{Result: pt.Tags, Registered: pt.Registered, Updated: pt.Updated})
}

type getTagsResponse struct {
	Result     map[string]any `json:"result"`
	Registered bool           `json:"registered"`
	Updated    time.Time      `json:"updated"`
}

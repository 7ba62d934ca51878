package dispatcher

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Group: "herald-dispatcher", WhatsAppBaseURL: "https://graph.facebook.com", GraphVersion: "v23.0",
		RatePerSender: 80, Burst: 1, RequestTimeout: 10 * time.Second, MaxAttempts: 5, Concurrency: 64,
		Breaker:   BreakerConfig{ConsecutiveFailures: 5, OpenTimeout: 10 * time.Second, HalfOpenRequests: 1},
		Templates: TemplatesConfig{SyncInterval: 15 * time.Minute, ResyncDelay: 5 * time.Second, PageLimit: 100},
		Email:     EmailConfig{RatePerSender: 14, Burst: 14, PoolSize: 4, MaxMessagesPerConn: 100, IdleTimeout: 30 * time.Second},
		Push:      PushConfig{FCMBaseURL: "https://fcm.googleapis.com", RatePerSender: 500, Burst: 500},
		Limiter: LimiterConfig{
			Mode: LimiterGlobal, Heartbeat: 250 * time.Millisecond, LowerFactor: 0.7,
			LowerCooldown: time.Second, MinRate: 1, RaiseStep: 0.05, RaiseEvery: 5 * time.Second,
		},
		PairInterval: 6 * time.Second, MaxHold: time.Second, MaxBatchTime: 2 * time.Second,
		Delivery: DeliveryConfig{InDoubt: InDoubtHold, ResendAfter: 10 * time.Minute, Window: 24 * time.Hour, MaxIDs: 250_000},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults\n got %+v\nwant %+v", c, want)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // error substring; "" for valid
	}{
		{"simulator url", Config{WhatsAppBaseURL: "http://127.0.0.1:8089/meta"}, ""},
		{"url without scheme", Config{WhatsAppBaseURL: "graph.facebook.com"}, "whatsapp_base_url"},
		{"ftp url", Config{WhatsAppBaseURL: "ftp://x"}, "whatsapp_base_url"},
		{"url with query", Config{WhatsAppBaseURL: "https://x/?a=b"}, "whatsapp_base_url"},
		{"bad url", Config{WhatsAppBaseURL: "http://[::1"}, "whatsapp_base_url"},
		{"version without v", Config{GraphVersion: "23.0"}, "graph_version"},
		{"version with path", Config{GraphVersion: "v23.0/x"}, "graph_version"},
		{"negative rate", Config{RatePerSender: -1}, "rate_per_sender"},
		{"nan rate", Config{RatePerSender: math.NaN()}, "rate_per_sender"},
		{"inf rate", Config{RatePerSender: math.Inf(1)}, "rate_per_sender"},
		{"negative burst", Config{Burst: -1}, "burst"},
		{"Meta's most", Config{RatePerSender: 1000}, ""},
		{"above Meta's most", Config{RatePerSender: 1000.5}, "rate_per_sender 1000.5: want above 0 and at most 1000"},
		{"huge burst", Config{Burst: 5000}, "burst"},
		{"unknown limiter", Config{Limiter: LimiterConfig{Mode: "cluster"}}, "limiter.mode"},
		{"local limiter", Config{Limiter: LimiterConfig{Mode: LimiterLocal}}, ""},
		{"fast heartbeat", Config{Limiter: LimiterConfig{Heartbeat: time.Millisecond}}, "limiter.heartbeat"},
		{"lower factor 1", Config{Limiter: LimiterConfig{LowerFactor: 1}}, "limiter.lower_factor"},
		{"negative cooldown", Config{Limiter: LimiterConfig{LowerCooldown: -1}}, "limiter.lower_cooldown"},
		{"min rate above Meta's most", Config{Limiter: LimiterConfig{MinRate: 2000}}, "limiter.min_rate"},
		{"raise step above 1", Config{Limiter: LimiterConfig{RaiseStep: 2}}, "limiter.raise_step"},
		{"pair planning off", Config{PairInterval: -1}, ""},
		{"resend policy", Config{Delivery: DeliveryConfig{InDoubt: InDoubtResend}}, ""},
		{"unknown in-doubt policy", Config{Delivery: DeliveryConfig{InDoubt: "drop"}}, "delivery.in_doubt \"drop\": want hold or resend"},
		{"negative resend_after", Config{Delivery: DeliveryConfig{ResendAfter: -1}}, "delivery.resend_after"},
		{"negative window", Config{Delivery: DeliveryConfig{Window: -1}}, "delivery.window"},
		{"negative max_ids", Config{Delivery: DeliveryConfig{MaxIDs: -1}}, "delivery.max_ids"},
		{"negative max hold", Config{MaxHold: -time.Second}, "max_hold"},
		{"negative batch time", Config{MaxBatchTime: -time.Second}, "max_batch_time"},
		{"negative timeout", Config{RequestTimeout: -time.Second}, "request_timeout"},
		{"negative attempts", Config{MaxAttempts: -1}, "max_attempts"},
		{"negative concurrency", Config{Concurrency: -1}, "concurrency"},
		{"negative breaker", Config{Breaker: BreakerConfig{OpenTimeout: -1}}, "breaker"},
		{"huge breaker", Config{Breaker: BreakerConfig{ConsecutiveFailures: math.MaxUint32 + 1}}, "breaker"},
		{"no periodic template sync", Config{Templates: TemplatesConfig{SyncInterval: -1}}, ""},
		{"template sync too often", Config{Templates: TemplatesConfig{SyncInterval: time.Millisecond}}, "templates.sync_interval"},
		{"negative resync delay", Config{Templates: TemplatesConfig{ResyncDelay: -time.Second}}, "templates.resync_delay"},
		{"template page too large", Config{Templates: TemplatesConfig{PageLimit: 5000}}, "templates.page_limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v, want ok", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestSchedulerConfig(t *testing.T) {
	var c SchedulerConfig
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Group != "herald-scheduler" || c.MaxPending != 1_000_000 || c.ReleaseBatch != 10000 || c.Now == nil {
		t.Fatalf("defaults %+v", c)
	}
	f := func(cfg SchedulerConfig, want string) {
		t.Helper()
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Validate(%+v) = %v, want %q", cfg, err, want)
		}
	}
	f(SchedulerConfig{MaxPending: -1}, "max_pending")
	f(SchedulerConfig{ReleaseBatch: -1}, "release_batch")
}

package dispatcher

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/fcmsim"
	"github.com/heraldhq/herald/internal/smtpsim"
)

// BenchmarkEmailSend: emails through the provider's connection pool to the
// in-process SMTP server over loopback TCP, STARTTLS and AUTH, HTML with
// tracked links, 4 senders in parallel. pool=off dials (TCP, STARTTLS,
// AUTH) for every message.
func BenchmarkEmailSend(b *testing.B) {
	for _, tc := range []struct {
		name    string
		maxUses int
	}{{"pool=4", 100}, {"pool=off", 1}} {
		b.Run(tc.name, func(b *testing.B) {
			srv, err := smtpsim.Start(smtpsim.Config{Users: map[string]string{smtpUser: smtpPassword}, MaxStored: 1}, "127.0.0.1:0", nil)
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			reg := benchApps(b, srv)
			app, _ := reg.ByID("mail")
			cfg := Config{Email: EmailConfig{TrackingURL: trackingURL, TrackingKeys: []string{trackingKey}, PoolSize: 4, MaxMessagesPerConn: tc.maxUses}}
			if err := cfg.Validate(); err != nil {
				b.Fatal(err)
			}
			e, err := NewEmail(cfg.Email)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			now := time.Now()
			probe := emailReq("probe", "ann@example.com", now)
			msg, err := e.build(app, probe, "<x@y>")
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			var seq atomic.Int64
			b.SetParallelism(2) // 4 goroutines on 2 cores: the pool's size
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := emailReq("bench-"+strconv.FormatInt(seq.Add(1), 10), "ann@example.com", now)
					if _, err := e.Send(b.Context(), app, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "emails/s")
			if st := srv.Stats(); st.Messages < b.N {
				b.Fatalf("server stored %d messages, want %d", st.Messages, b.N)
			}
		})
	}
}

// BenchmarkPushSend: pushes through the provider to the FCM simulator over
// loopback HTTP, 4 in parallel.
func BenchmarkPushSend(b *testing.B) {
	sim, err := fcmsim.New(fcmsim.Config{Projects: []fcmsim.Project{{ID: fcmProject, AccessToken: fcmToken}}, MaxStored: 1})
	if err != nil {
		b.Fatal(err)
	}
	api := httptest.NewServer(sim.Handler())
	defer api.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	p := NewPush(api.URL, &http.Client{Transport: tr}, nil)
	app, _ := benchApps(b, nil).ByID("mail")
	now := time.Now()
	b.ReportAllocs()
	var seq atomic.Int64
	b.SetParallelism(2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := pushReq("bench-"+strconv.FormatInt(seq.Add(1), 10), "token-bench", now)
			if _, err := p.Send(b.Context(), app, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
	if st := sim.Stats(); st.Accepted < b.N {
		b.Fatalf("simulator accepted %d, want %d", st.Accepted, b.N)
	}
}

func benchApps(b *testing.B, srv *smtpsim.Server) *apps.Registry {
	b.Helper()
	smtpCfg := apps.SMTP{Addr: "127.0.0.1:1", Username: smtpUser, Password: smtpPassword, ServerName: "localhost"}
	if srv != nil {
		smtpCfg.Addr, smtpCfg.CAPEM = srv.Addr(), srv.CertPEM()
	}
	reg, err := apps.New([]apps.App{{
		ID: "mail", APIToken: "mail-api-token-0123456789",
		Email: apps.Email{From: "news@shop.example", SMTP: smtpCfg},
		Push:  apps.Push{FCM: apps.FCM{ProjectID: fcmProject, AccessToken: fcmToken}},
	}})
	if err != nil {
		b.Fatal(err)
	}
	return reg
}

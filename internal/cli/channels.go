package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/heraldhq/herald/dispatcher"
	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/fcmsim"
	"github.com/heraldhq/herald/internal/service"
	"github.com/heraldhq/herald/internal/smtpsim"
)

// channelSims are the email and push ends of the dev stack: an SMTP sink
// (STARTTLS on a generated certificate, AUTH) that keeps what it receives,
// and the FCM HTTP v1 simulator.
type channelSims struct {
	smtp   *smtpsim.Server
	fcm    *fcmsim.Sim
	fcmSrv *service.Server
}

func (c *channelSims) close() {
	if c.fcmSrv != nil {
		_ = c.fcmSrv.Shutdown(5 * time.Second)
	}
	if c.smtp != nil {
		c.smtp.Close()
	}
}

// Dev app email and push identity.
const (
	devEmailFrom   = "news@demo.herald.localhost"
	devSMTPUser    = "demo"
	devFCMProject  = "herald-demo"
	defaultSimAddr = "127.0.0.1:0"
)

// startChannelSims starts the SMTP sink and the push simulator. With
// cfg.DevApp it gives the dev app settings pointing at them and builds
// cfg.Apps; the sinks accept the SMTP credentials and FCM projects of
// every app.
func (s *stack) startChannelSims(cfg *stackConfig, log *slog.Logger) error {
	if cfg.DevApp != nil {
		a := *cfg.DevApp
		cfg.DevApp = &a
	}
	users := map[string]string{}
	var projects []fcmsim.Project
	collect := func(a *apps.App) {
		if a.Email.SMTP.Username != "" {
			users[a.Email.SMTP.Username] = a.Email.SMTP.Password
		}
		if a.Push.Enabled() {
			projects = append(projects, fcmsim.Project{ID: a.Push.FCM.ProjectID, AccessToken: a.Push.FCM.AccessToken})
		}
	}
	switch {
	case cfg.DevApp != nil:
		collect(cfg.DevApp)
	case cfg.Apps != nil:
		for _, a := range cfg.Apps.All() {
			collect(a)
		}
	}
	addr := cfg.SMTPAddr
	if addr == "" {
		addr = defaultSimAddr
	}
	var err error
	if s.sims.smtp, err = smtpsim.Start(smtpsim.Config{Users: users}, addr, log.With("component", "smtpsim")); err != nil {
		return err
	}
	if s.sims.fcm, err = fcmsim.New(fcmsim.Config{Projects: projects}); err != nil {
		return err
	}
	addr = cfg.FCMAddr
	if addr == "" {
		addr = defaultSimAddr
	}
	if s.sims.fcmSrv, err = service.Listen(addr, s.sims.fcm.Handler(), log); err != nil {
		return err
	}
	if cfg.DevApp == nil {
		if cfg.Apps == nil {
			return errors.New("stack: Apps or DevApp is required")
		}
		return nil
	}
	cfg.DevApp.Email.SMTP.Addr = s.sims.smtp.Addr()
	cfg.DevApp.Email.SMTP.ServerName = "localhost"
	cfg.DevApp.Email.SMTP.CAPEM = s.sims.smtp.CertPEM()
	if cfg.Apps, err = apps.New([]apps.App{*cfg.DevApp}); err != nil {
		return fmt.Errorf("dev app: %w", err)
	}
	return nil
}

// channelConfig points the dispatcher's email tracking at ingest and its
// push provider at the simulator, where the config leaves them unset.
func (s *stack) channelConfig(d *dispatcher.Config) {
	if d.Push.FCMBaseURL == "" {
		d.Push.FCMBaseURL = s.sims.fcmSrv.URL()
	}
	if d.Email.TrackingURL == "" && len(s.cfg.TrackingKeys) > 0 {
		d.Email.TrackingURL = s.ingestSrv.URL()
		d.Email.TrackingKeys = s.cfg.TrackingKeys
	}
}

// devChannels are the dev app's email and push settings, the server
// addresses filled at start.
func (c *devCredentials) devChannels(a *apps.App) {
	a.Email = apps.Email{
		From: devEmailFrom, FromName: "Herald demo",
		SMTP: apps.SMTP{Username: devSMTPUser, Password: c.SMTPPassword},
	}
	a.Push = apps.Push{FCM: apps.FCM{ProjectID: devFCMProject, AccessToken: c.FCMToken}}
}

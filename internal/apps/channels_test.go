package apps

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func emailApp() App {
	return App{
		ID: "shop", APIToken: "shop-api-token-0123456789",
		Email: Email{
			From: "news@shop.example", Senders: []string{"orders@shop.example"},
			SMTP: SMTP{Addr: "smtp.example.com:587", Username: "mailer", Password: "env:TEST_HERALD_SMTP_PASSWORD"},
		},
		Push: Push{FCM: FCM{ProjectID: "shop-app", AccessToken: "file:" + "TOKENFILE"}},
	}
}

func TestChannelSettings(t *testing.T) {
	t.Setenv("TEST_HERALD_SMTP_PASSWORD", "smtp-secret-value")
	tokFile := filepath.Join(t.TempDir(), "fcm")
	if err := os.WriteFile(tokFile, []byte("fcm-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := emailApp()
	a.Push.FCM.AccessToken = "file:" + tokFile
	reg, err := New([]App{a})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := reg.ByID("shop")
	if got.Email.SMTP.Password != "smtp-secret-value" || got.Push.FCM.AccessToken != "fcm-secret-value" {
		t.Fatalf("secrets not resolved: %q %q", got.Email.SMTP.Password, got.Push.FCM.AccessToken)
	}
	if got.Email.SMTP.TLS != TLSStartTLS || got.Email.SMTP.ServerName != "smtp.example.com" || got.Email.SMTP.HeloName != "localhost" {
		t.Fatalf("defaults: %+v", got.Email.SMTP.TLS)
	}
	for sender, want := range map[string]string{"": "news@shop.example", "ORDERS@shop.example": "orders@shop.example", "ceo@shop.example": ""} {
		if addr, ok := got.Email.Sender(sender); addr != want || ok != (want != "") {
			t.Errorf("Sender(%q) = %q, %v; want %q", sender, addr, ok, want)
		}
	}
	// Secrets never print, whichever way the settings are logged.
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("x", "app", got, "smtp", got.Email.SMTP, "fcm", got.Push.FCM)
	out := buf.String() + fmt.Sprintf("%v %+v %v %+v", *got, got.Email.SMTP, got.Push.FCM, got.Push)
	for _, secret := range []string{"smtp-secret-value", "fcm-secret-value"} {
		if strings.Contains(out, secret) {
			t.Fatalf("a secret was printed: %s", out)
		}
	}
}

func TestChannelSettingsRefused(t *testing.T) {
	t.Setenv("TEST_HERALD_SMTP_PASSWORD", "x")
	f := func(name string, mut func(*App), want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			a := emailApp()
			a.Push = Push{}
			mut(&a)
			_, err := New([]App{a})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want one naming %q", err, want)
			}
		})
	}
	f("from without smtp", func(a *App) { a.Email.SMTP = SMTP{} }, "email.smtp.addr")
	f("smtp without from", func(a *App) { a.Email.From = "" }, "email.from")
	f("display name in from", func(a *App) { a.Email.From = "Shop <news@shop.example>" }, "email.from")
	f("bad sender", func(a *App) { a.Email.Senders = []string{"nope"} }, "email.senders[0]")
	f("bad addr", func(a *App) { a.Email.SMTP.Addr = "smtp.example.com" }, "email.smtp.addr")
	f("bad port", func(a *App) { a.Email.SMTP.Addr = "smtp.example.com:99999" }, "email.smtp.addr")
	f("bad tls", func(a *App) { a.Email.SMTP.TLS = "maybe" }, "email.smtp.tls")
	f("password without user", func(a *App) { a.Email.SMTP.Username = "" }, "email.smtp.username")
	f("missing env", func(a *App) { a.Email.SMTP.Password = "env:TEST_HERALD_UNSET_VARIABLE" }, "email.smtp.password")
	f("missing ca file", func(a *App) { a.Email.SMTP.CAFile = "/nonexistent/ca.pem" }, "email.smtp.ca_file")
	f("bad project", func(a *App) { a.Push.FCM = FCM{ProjectID: "Shop App", AccessToken: "t"} }, "push.fcm.project_id")
	f("project without token", func(a *App) { a.Push.FCM = FCM{ProjectID: "shop-app"} }, "push.fcm.access_token")
	f("token without project", func(a *App) { a.Push.FCM = FCM{AccessToken: "t"} }, "push.fcm.project_id")
}

package apps

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestThroughputOverrides(t *testing.T) {
	app := func(tp map[string]float64) App {
		return App{ID: "shop", APIToken: "shop-api-token-0123456789", WhatsApp: WhatsApp{
			PhoneNumberIDs: []string{"1001", "1002"}, Throughput: tp,
		}}
	}
	reg, err := New([]App{app(map[string]float64{"1002": 1000})})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := reg.ByID("shop")
	if got := a.Throughput("1002"); got != 1000 {
		t.Errorf("Throughput(1002) = %v, want 1000", got)
	}
	if got := a.Throughput("1001"); got != 0 {
		t.Errorf("Throughput(1001) = %v, want 0 (no override)", got)
	}
	f := func(name string, tp map[string]float64, want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			_, err := New([]App{app(tp)})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want it to name %q", err, want)
			}
		})
	}
	f("foreign number", map[string]float64{"2001": 100}, "whatsapp.throughput: \"2001\" is not one of the app's phone_number_ids")
	f("above Meta's maximum", map[string]float64{"1001": 1001}, "whatsapp.throughput[1001] 1001")
	f("zero", map[string]float64{"1001": 0}, "whatsapp.throughput[1001] 0")
	f("NaN", map[string]float64{"1001": math.NaN()}, "whatsapp.throughput[1001] NaN")
}

func TestMessagingTier(t *testing.T) {
	f := func(yamlValue string, want int, wantErr string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "apps.yaml")
		body := "apps:\n- id: a1\n  api_token: 0123456789abcdef\n  whatsapp:\n    phone_number_ids: [\"p1\"]\n"
		if yamlValue != "" {
			body += "    messaging_tier: " + yamlValue + "\n"
		}
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		reg, err := Load(path)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("messaging_tier %s: err %v, want it to contain %q", yamlValue, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("messaging_tier %s: %v", yamlValue, err)
		}
		a, _ := reg.ByID("a1")
		if got := a.Tier(); got != want {
			t.Fatalf("messaging_tier %s: Tier() = %d, want %d", yamlValue, got, want)
		}
		if a.Business() != "app:a1" {
			t.Fatalf("Business() = %q without a waba_id", a.Business())
		}
	}
	f("", TierUnlimited, "")
	f("250", 250, "")
	f(`"2000"`, 2000, "")
	f("10K", 10000, "")
	f("100000", 100000, "")
	f("unlimited", TierUnlimited, "")
	f("300", 0, "app a1: whatsapp.messaging_tier \"300\": want one of 250")
	f("lots", 0, "whatsapp.messaging_tier")
}

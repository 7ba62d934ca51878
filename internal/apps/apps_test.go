package apps

import (
	"math"
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

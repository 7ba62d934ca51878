package ingest

import (
	"encoding/json"
	"testing"
	"time"
)

func TestCanonicalHWID(t *testing.T) {
	f := func(in, want, wantCountry string) {
		t.Helper()
		got, country, err := canonicalHWID("request.hwid", in)
		if err != nil {
			t.Fatalf("canonicalHWID(%q): %v", in, err)
		}
		if got != want || country != wantCountry {
			t.Fatalf("canonicalHWID(%q) = %q, %q; want %q, %q", in, got, country, want, wantCountry)
		}
	}
	f("", "", "")
	f("whatsapp:+16505551234", "whatsapp:+16505551234", "US")
	f("whatsapp:+1 (650) 555-1234", "whatsapp:+16505551234", "US")
	f("WhatsApp:+1.650.555.1234", "whatsapp:+16505551234", "US")
	f("whatsapp:+44 (0)20 7946 0958", "whatsapp:+442079460958", "GB")
	f("whatsapp:+880 1712-345678", "whatsapp:+8801712345678", "BD")
	f("sms:+49 151 23456789", "sms:+4915123456789", "DE")
	f("Ana@Example.com", "ana@example.com", "")
	f("device-ABC", "device-ABC", "")
	f("not@an@email", "not@an@email", "")

	bad := func(in string) {
		t.Helper()
		if got, _, err := canonicalHWID("request.hwid", in); err == nil {
			t.Fatalf("canonicalHWID(%q) = %q, want an error", in, got)
		}
	}
	bad("whatsapp:")
	bad("whatsapp:16505551234")
	bad("whatsapp:+15550000000")
	bad("whatsapp:+1800FLOWERS")
	bad("whatsapp:+16505551234;ext=1")
	bad("whatsapp:+" + string(make([]byte, 40)))
	bad("sms:+1")
	bad("tab\there")
	bad(string([]byte{0xff, 0xfe}))
}

func TestWANumber(t *testing.T) {
	f := func(in, want, wantCountry string, wantOK bool) {
		t.Helper()
		got, country, ok := waNumber(in)
		if got != want || country != wantCountry || ok != wantOK {
			t.Fatalf("waNumber(%q) = %q, %q, %v; want %q, %q, %v", in, got, country, ok, want, wantCountry, wantOK)
		}
	}
	f("16505551234", "+16505551234", "US", true)
	f("4915123456789", "+4915123456789", "DE", true)
	f("15550000000", "+15550000000", "", true) // Meta's test numbers are not valid, but real senders
	f("", "", "", false)
	f("+16505551234", "", "", false)
	f("1650555123412345", "", "", false)
	f("120363@g.us", "", "", false)
}

func TestParseTimezone(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got, err := parseTimezone("request.timezone", json.RawMessage(in))
		if err != nil {
			t.Fatalf("parseTimezone(%s): %v", in, err)
		}
		if got != want {
			t.Fatalf("parseTimezone(%s) = %q, want %q", in, got, want)
		}
	}
	f(``, "")
	f(`null`, "")
	f(`""`, "")
	f(`"Europe/Berlin"`, "Europe/Berlin")
	f(`"UTC"`, "UTC")
	f(`"+05:30"`, "+05:30")
	f(`"-14:00"`, "-14:00")
	f(`19800`, "+05:30")
	f(`-10800`, "-03:00")
	f(`0`, "+00:00")

	bad := func(in string) {
		t.Helper()
		if got, err := parseTimezone("request.timezone", json.RawMessage(in)); err == nil {
			t.Fatalf("parseTimezone(%s) = %q, want an error", in, got)
		}
	}
	bad(`"Local"`)
	bad(`"../../etc/passwd"`)
	bad(`"/etc/localtime"`)
	bad(`"Mars/Olympus"`)
	bad(`"+15:00"`)
	bad(`"+05:60"`)
	bad(`19801`)
	bad(`1.5`)
	bad(`50460`)
	bad(`true`)
	bad(`["UTC"]`)
}

func TestParseTimestamp(t *testing.T) {
	now := time.Unix(1750000000, 0).UTC()
	f := func(in string, want time.Time) {
		t.Helper()
		got, err := parseTimestamp("request.timestampUTC", json.RawMessage(in), now)
		if err != nil {
			t.Fatalf("parseTimestamp(%s): %v", in, err)
		}
		if !got.Equal(want) {
			t.Fatalf("parseTimestamp(%s) = %s, want %s", in, got, want)
		}
	}
	f(``, now)
	f(`null`, now)
	f(`1`, time.Unix(1, 0))
	f(`1749999999`, time.Unix(1749999999, 0))
	f(`1749999999.5`, time.Unix(1749999999, 5e8))
	f(`1750086400`, time.Unix(1750086400, 0)) // exactly a day ahead

	bad := func(in string) {
		t.Helper()
		if got, err := parseTimestamp("request.timestampUTC", json.RawMessage(in), now); err == nil {
			t.Fatalf("parseTimestamp(%s) = %s, want an error", in, got)
		}
	}
	bad(`0`)
	bad(`-1`)
	bad(`1750086401`)
	bad(`1e300`)
	bad(`1e400`)
	bad(`"1750000000"`)
	bad(`true`)
}

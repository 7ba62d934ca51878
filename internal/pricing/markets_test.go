package pricing

import "testing"

func TestMarketTables(t *testing.T) {
	if len(countries) != 250 { // ISO 3166-1's 249 and Kosovo
		t.Fatalf("%d countries", len(countries))
	}
	seen := map[string]string{}
	for region, cs := range regions {
		for _, c := range cs {
			if countries[c] == "" {
				t.Errorf("%s: %s is not a country code", region, c)
			}
			if prev := seen[c]; prev != "" {
				t.Errorf("%s is in %s and %s", c, prev, region)
			}
			seen[c] = region
		}
	}
	for code, name := range countries {
		if got := countryByName[nameKey(name)]; got != code {
			t.Errorf("the name of %s, %q, finds %s", code, name, got)
		}
	}
	for from, to := range sharedCallingCode {
		if countries[from] == "" || countries[to] == "" || sharedCallingCode[to] != "" {
			t.Errorf("shared calling code %s -> %s", from, to)
		}
	}
	for name, code := range countryAliases {
		if countries[code] == "" {
			t.Errorf("alias %q: %s is not a country code", name, code)
		}
	}
	for in, want := range map[string]string{
		"Rest of Central & Eastern Europe": "rest of central and eastern europe",
		"Côte d’Ivoire":                    "côte d ivoire",
		"  Guinea-Bissau ":                 "guinea bissau",
	} {
		if got := nameKey(in); got != want {
			t.Errorf("nameKey(%q) = %q, want %q", in, got, want)
		}
	}
	if NormalizeCountry(" gb ") != "GB" || NormalizeCountry("UK") != "" || CountryName("no") != "Norway" {
		t.Error("NormalizeCountry or CountryName")
	}
}

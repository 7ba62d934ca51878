package pricing

import (
	"strings"
	"unicode"
)

// Meta prices a message by the market of the recipient's country calling
// code: a country of its own (India, Brazil, ...) or a region ("Rest of
// Africa", ...); every country in neither is "Other". The regions below
// are Meta's published market-to-country mapping as of the rate cards of
// 2025 and 2026 (Zimbabwe moved from Other to Rest of Africa on
// 2025-10-01). A rate card that names a country as a market of its own
// (the cards from 2026-10-01 take Morocco out of Rest of Africa, Poland out
// of Rest of Central & Eastern Europe, ...) overrides its region: a
// country falls to its region only when the card has no row for it, so a
// newer card needs no change here.
var regions = map[string][]string{
	"North America": {"CA", "US"},
	"Rest of Africa": {
		"DZ", "AO", "BJ", "BW", "BF", "BI", "CM", "TD", "CG", "ER", "ET", "GA", "GM", "GH", "GW", "CI", "KE", "LS", "LR", "LY",
		"MG", "MW", "ML", "MR", "MA", "MZ", "NA", "NE", "RW", "SN", "SL", "SO", "SS", "SD", "SZ", "TZ", "TG", "TN", "UG", "ZM", "ZW",
	},
	"Rest of Asia Pacific": {
		"AF", "AU", "BD", "KH", "CN", "HK", "JP", "LA", "MN", "NP", "NZ", "PG", "PH", "SG", "LK", "TW", "TJ", "TH", "TM", "UZ", "VN",
	},
	"Rest of Central & Eastern Europe": {
		"AL", "AM", "AZ", "BY", "BG", "HR", "CZ", "GE", "GR", "HU", "LV", "LT", "MK", "MD", "PL", "RO", "RS", "SK", "SI", "UA",
	},
	"Rest of Latin America":  {"BO", "CR", "DO", "EC", "SV", "GT", "HT", "HN", "JM", "NI", "PA", "PY", "PR", "UY", "VE"},
	"Rest of Middle East":    {"BH", "IQ", "JO", "KW", "LB", "OM", "QA", "YE"},
	"Rest of Western Europe": {"AT", "BE", "DK", "FI", "IE", "NO", "PT", "SE", "CH"},
}

// sharedCallingCode maps territories whose numbers carry another
// country's calling code to that country: Meta prices by the calling code
// (a Guernsey number is +44, priced as the United Kingdom), while phone
// number libraries, and so Herald's profiles, name the territory.
var sharedCallingCode = map[string]string{
	"GG": "GB", "JE": "GB", "IM": "GB", // +44
	"AX": "FI",             // +358
	"SJ": "NO",             // +47
	"VA": "IT",             // +39
	"CC": "AU", "CX": "AU", // +61
}

// OtherMarket is the market of every country no other market of a rate
// card covers.
const OtherMarket = "Other"

// regionOf maps a country code to its region's name; regionByKey maps a
// normalised region name to its name.
var regionOf, regionByKey = func() (map[string]string, map[string]string) {
	of, byKey := map[string]string{}, map[string]string{}
	for name, cs := range regions {
		byKey[nameKey(name)] = name
		for _, c := range cs {
			of[c] = name
		}
	}
	return of, byKey
}()

// countries are the ISO 3166-1 alpha-2 codes with an English short name
// (Meta's spelling where its rate cards name the country), and XK, the
// code phone-number libraries give Kosovo.
var countries = map[string]string{
	"AD": "Andorra", "AE": "United Arab Emirates", "AF": "Afghanistan", "AG": "Antigua and Barbuda", "AI": "Anguilla",
	"AL": "Albania", "AM": "Armenia", "AO": "Angola", "AQ": "Antarctica", "AR": "Argentina", "AS": "American Samoa",
	"AT": "Austria", "AU": "Australia", "AW": "Aruba", "AX": "Åland Islands", "AZ": "Azerbaijan",
	"BA": "Bosnia and Herzegovina", "BB": "Barbados", "BD": "Bangladesh", "BE": "Belgium", "BF": "Burkina Faso",
	"BG": "Bulgaria", "BH": "Bahrain", "BI": "Burundi", "BJ": "Benin", "BL": "Saint Barthélemy", "BM": "Bermuda",
	"BN": "Brunei", "BO": "Bolivia", "BQ": "Caribbean Netherlands", "BR": "Brazil", "BS": "Bahamas", "BT": "Bhutan",
	"BV": "Bouvet Island", "BW": "Botswana", "BY": "Belarus", "BZ": "Belize", "CA": "Canada",
	"CC": "Cocos (Keeling) Islands", "CD": "Democratic Republic of the Congo", "CF": "Central African Republic",
	"CG": "Republic of the Congo", "CH": "Switzerland", "CI": "Ivory Coast", "CK": "Cook Islands", "CL": "Chile",
	"CM": "Cameroon", "CN": "China", "CO": "Colombia", "CR": "Costa Rica", "CU": "Cuba", "CV": "Cape Verde",
	"CW": "Curaçao", "CX": "Christmas Island", "CY": "Cyprus", "CZ": "Czech Republic", "DE": "Germany",
	"DJ": "Djibouti", "DK": "Denmark", "DM": "Dominica", "DO": "Dominican Republic", "DZ": "Algeria", "EC": "Ecuador",
	"EE": "Estonia", "EG": "Egypt", "EH": "Western Sahara", "ER": "Eritrea", "ES": "Spain", "ET": "Ethiopia",
	"FI": "Finland", "FJ": "Fiji", "FK": "Falkland Islands", "FM": "Micronesia", "FO": "Faroe Islands", "FR": "France",
	"GA": "Gabon", "GB": "United Kingdom", "GD": "Grenada", "GE": "Georgia", "GF": "French Guiana", "GG": "Guernsey",
	"GH": "Ghana", "GI": "Gibraltar", "GL": "Greenland", "GM": "Gambia", "GN": "Guinea", "GP": "Guadeloupe",
	"GQ": "Equatorial Guinea", "GR": "Greece", "GS": "South Georgia and the South Sandwich Islands", "GT": "Guatemala",
	"GU": "Guam", "GW": "Guinea-Bissau", "GY": "Guyana", "HK": "Hong Kong", "HM": "Heard Island and McDonald Islands",
	"HN": "Honduras", "HR": "Croatia", "HT": "Haiti", "HU": "Hungary", "ID": "Indonesia", "IE": "Ireland",
	"IL": "Israel", "IM": "Isle of Man", "IN": "India", "IO": "British Indian Ocean Territory", "IQ": "Iraq",
	"IR": "Iran", "IS": "Iceland", "IT": "Italy", "JE": "Jersey", "JM": "Jamaica", "JO": "Jordan", "JP": "Japan",
	"KE": "Kenya", "KG": "Kyrgyzstan", "KH": "Cambodia", "KI": "Kiribati", "KM": "Comoros", "KN": "Saint Kitts and Nevis",
	"KP": "North Korea", "KR": "South Korea", "KW": "Kuwait", "KY": "Cayman Islands", "KZ": "Kazakhstan", "LA": "Laos",
	"LB": "Lebanon", "LC": "Saint Lucia", "LI": "Liechtenstein", "LK": "Sri Lanka", "LR": "Liberia", "LS": "Lesotho",
	"LT": "Lithuania", "LU": "Luxembourg", "LV": "Latvia", "LY": "Libya", "MA": "Morocco", "MC": "Monaco",
	"MD": "Moldova", "ME": "Montenegro", "MF": "Saint Martin", "MG": "Madagascar", "MH": "Marshall Islands",
	"MK": "North Macedonia", "ML": "Mali", "MM": "Myanmar", "MN": "Mongolia", "MO": "Macau",
	"MP": "Northern Mariana Islands", "MQ": "Martinique", "MR": "Mauritania", "MS": "Montserrat", "MT": "Malta",
	"MU": "Mauritius", "MV": "Maldives", "MW": "Malawi", "MX": "Mexico", "MY": "Malaysia", "MZ": "Mozambique",
	"NA": "Namibia", "NC": "New Caledonia", "NE": "Niger", "NF": "Norfolk Island", "NG": "Nigeria", "NI": "Nicaragua",
	"NL": "Netherlands", "NO": "Norway", "NP": "Nepal", "NR": "Nauru", "NU": "Niue", "NZ": "New Zealand", "OM": "Oman",
	"PA": "Panama", "PE": "Peru", "PF": "French Polynesia", "PG": "Papua New Guinea", "PH": "Philippines",
	"PK": "Pakistan", "PL": "Poland", "PM": "Saint Pierre and Miquelon", "PN": "Pitcairn Islands", "PR": "Puerto Rico",
	"PS": "Palestine", "PT": "Portugal", "PW": "Palau", "PY": "Paraguay", "QA": "Qatar", "RE": "Réunion",
	"RO": "Romania", "RS": "Serbia", "RU": "Russia", "RW": "Rwanda", "SA": "Saudi Arabia", "SB": "Solomon Islands",
	"SC": "Seychelles", "SD": "Sudan", "SE": "Sweden", "SG": "Singapore", "SH": "Saint Helena", "SI": "Slovenia",
	"SJ": "Svalbard and Jan Mayen", "SK": "Slovakia", "SL": "Sierra Leone", "SM": "San Marino", "SN": "Senegal",
	"SO": "Somalia", "SR": "Suriname", "SS": "South Sudan", "ST": "São Tomé and Príncipe", "SV": "El Salvador",
	"SX": "Sint Maarten", "SY": "Syria", "SZ": "Swaziland", "TC": "Turks and Caicos Islands", "TD": "Chad",
	"TF": "French Southern Territories", "TG": "Togo", "TH": "Thailand", "TJ": "Tajikistan", "TK": "Tokelau",
	"TL": "Timor-Leste", "TM": "Turkmenistan", "TN": "Tunisia", "TO": "Tonga", "TR": "Turkey",
	"TT": "Trinidad and Tobago", "TV": "Tuvalu", "TW": "Taiwan", "TZ": "Tanzania", "UA": "Ukraine", "UG": "Uganda",
	"UM": "United States Minor Outlying Islands", "US": "United States", "UY": "Uruguay", "UZ": "Uzbekistan",
	"VA": "Vatican City", "VC": "Saint Vincent and the Grenadines", "VE": "Venezuela", "VG": "British Virgin Islands",
	"VI": "U.S. Virgin Islands", "VN": "Vietnam", "VU": "Vanuatu", "WF": "Wallis and Futuna", "WS": "Samoa",
	"XK": "Kosovo", "YE": "Yemen", "YT": "Mayotte", "ZA": "South Africa", "ZM": "Zambia", "ZW": "Zimbabwe",
}

// countryAliases are other names rate cards and people use for a country.
var countryAliases = map[string]string{
	"UAE": "AE", "Czechia": "CZ", "Côte d'Ivoire": "CI", "Cote d'Ivoire": "CI", "Côte d’Ivoire": "CI",
	"Congo": "CG", "Congo - Brazzaville": "CG", "Congo-Brazzaville": "CG", "DR Congo": "CD", "Congo - Kinshasa": "CD",
	"Macedonia": "MK", "Eswatini": "SZ", "Türkiye": "TR", "Turkiye": "TR", "UK": "GB", "Great Britain": "GB",
	"USA": "US", "United States of America": "US", "Russian Federation": "RU", "Macao": "MO", "East Timor": "TL",
	"Cabo Verde": "CV", "Burma": "MM", "Hong Kong SAR": "HK", "Korea": "KR", "Republic of Korea": "KR",
	"Viet Nam": "VN", "Lao PDR": "LA", "Palestinian Territories": "PS", "Aland Islands": "AX",
	"Bolivia (Plurinational State of)": "BO", "Venezuela (Bolivarian Republic of)": "VE", "Moldova, Republic of": "MD",
	"Tanzania, United Republic of": "TZ", "Iran, Islamic Republic of": "IR", "Syrian Arab Republic": "SY",
}

// countryByName maps a normalised country name (or alias) to its code.
var countryByName = func() map[string]string {
	m := make(map[string]string, len(countries)+len(countryAliases))
	for code, name := range countries {
		m[nameKey(name)] = code
	}
	for name, code := range countryAliases {
		m[nameKey(name)] = code
	}
	return m
}()

// nameKey normalises a market or country name for matching: lower case,
// "&" as "and", any run of other non-letters, non-digits as one space.
func nameKey(s string) string {
	s = strings.ReplaceAll(strings.ToLower(s), "&", " and ")
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }), " ")
}

// NormalizeCountry returns the ISO 3166-1 alpha-2 code c in upper case, or
// "" when it is not one (empty, a name, "UK"): such recipients are priced
// as OtherMarket.
func NormalizeCountry(c string) string {
	c = strings.ToUpper(strings.TrimSpace(c))
	if _, ok := countries[c]; !ok {
		return ""
	}
	return c
}

// CountryName returns the English name of an ISO 3166-1 alpha-2 code, or
// "" for an unknown code.
func CountryName(code string) string { return countries[strings.ToUpper(code)] }

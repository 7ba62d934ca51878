package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/mail"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
)

// Limits on outside values. The body limit bounds the total; these keep
// single values sane for the stages downstream.
const (
	maxIDLen       = 256  // hwid, userId
	maxNameLen     = 128  // tag, attribute and event names
	maxAppVersion  = 64   // registerDevice app_version
	maxStringValue = 8192 // one tag or attribute string
	maxListLen     = 1000 // items in one list value
	maxValues      = 1000 // tags or attributes in one call
	maxPushToken   = 4096
)

// HWID prefixes of phone-number subscribers.
const (
	prefixWhatsApp = "whatsapp:"
	prefixSMS      = "sms:"
)

// checkText checks a free-form identifier or name: valid UTF-8, no control
// characters, at most max bytes. Empty is the caller's business.
func checkText(field, s string, maxLen int) *apiError {
	if len(s) > maxLen {
		return badField(field, "is %d bytes long, at most %d are allowed", len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return badField(field, "is not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return badField(field, "contains control characters")
		}
	}
	return nil
}

// parsePhone validates an international number ("+" and the country code;
// spaces, dashes, dots and parentheses allowed) and returns it in E.164 with
// its ISO 3166-1 alpha-2 country ("" for non-geographic numbers).
func parsePhone(field, s string) (e164, country string, _ *apiError) {
	if !strings.HasPrefix(s, "+") {
		return "", "", badField(field, "%s must be in international format: + and the country code, e.g. +4915123456789", quote(s))
	}
	if len(s) > 32 {
		return "", "", badField(field, "%s is too long for a phone number", quote(s))
	}
	// phonenumbers also takes letters (vanity numbers) and extensions; a
	// subscriber's number has neither.
	if i := strings.IndexFunc(s[1:], func(r rune) bool {
		return !(r >= '0' && r <= '9' || r == ' ' || r == '-' || r == '.' || r == '(' || r == ')')
	}); i >= 0 {
		return "", "", badField(field, "%s: a phone number has only digits, spaces, dashes, dots and parentheses after the +", quote(s))
	}
	if e164, country, ok := numbers.get(s); ok {
		return e164, country, nil
	}
	num, err := phonenumbers.Parse(s, "")
	if err != nil {
		return "", "", badField(field, "%s is not a phone number: %v", quote(s), err)
	}
	if !phonenumbers.IsValidNumber(num) {
		return "", "", badField(field, "%s is not a valid phone number", quote(s))
	}
	e164, country = phonenumbers.Format(num, phonenumbers.E164), isoCountry(num)
	numbers.put(s, e164, country)
	return e164, country, nil
}

// checkReachable refuses, at registration, numbers that cannot receive
// WhatsApp or SMS messages: fixed lines, toll-free, premium-rate,
// shared-cost, pagers, UANs, voicemail. Mobile, fixed-line-or-mobile (the
// US and Canada do not tell them apart), VoIP and personal numbers pass,
// as do valid numbers whose type libphonenumber cannot tell.
func checkReachable(field, e164 string, deviceType int) *apiError {
	num, err := phonenumbers.Parse(e164, "")
	if err != nil {
		return badField(field, "%s is not a phone number: %v", quote(e164), err)
	}
	switch t := phonenumbers.GetNumberType(num); t {
	case phonenumbers.MOBILE, phonenumbers.FIXED_LINE_OR_MOBILE, phonenumbers.VOIP, phonenumbers.PERSONAL_NUMBER, phonenumbers.UNKNOWN:
		return nil
	default:
		return badField(field, "%s is a %s number: device_type %d needs a mobile number", quote(e164), numberTypeName(t), deviceType)
	}
}

// numberTypeName names a libphonenumber number type for messages.
func numberTypeName(t phonenumbers.PhoneNumberType) string {
	switch t {
	case phonenumbers.FIXED_LINE:
		return "fixed-line"
	case phonenumbers.TOLL_FREE:
		return "toll-free"
	case phonenumbers.PREMIUM_RATE:
		return "premium-rate"
	case phonenumbers.SHARED_COST:
		return "shared-cost"
	case phonenumbers.PAGER:
		return "pager"
	case phonenumbers.UAN:
		return "UAN (universal access)"
	case phonenumbers.VOICEMAIL:
		return "voicemail"
	}
	return "non-mobile"
}

// isoCountry is the number's ISO 3166-1 alpha-2 country, "" when it has none.
func isoCountry(num *phonenumbers.PhoneNumber) string {
	rc := phonenumbers.GetRegionCodeForNumber(num)
	if len(rc) != 2 || rc == phonenumbers.UNKNOWN_REGION {
		return ""
	}
	return rc
}

// waNumber normalises a WhatsApp id from Meta (digits, no plus) to E.164 the
// way parsePhone does for API calls, so that one user keeps one key.
// Numbers phonenumbers cannot parse keep their digits: Meta delivered them,
// they are real. country is set for valid numbers only.
func waNumber(digits string) (e164, country string, ok bool) {
	if digits == "" || len(digits) > 15 || strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return "", "", false
	}
	if e164, country, ok := numbers.get("+" + digits); ok {
		return e164, country, true
	}
	num, err := phonenumbers.Parse("+"+digits, "")
	if err != nil {
		return "+" + digits, "", true
	}
	if !phonenumbers.IsValidNumber(num) {
		return phonenumbers.Format(num, phonenumbers.E164), "", true
	}
	e164, country = phonenumbers.Format(num, phonenumbers.E164), isoCountry(num)
	numbers.put("+"+digits, e164, country)
	return e164, country, true
}

// parseEmail validates a bare address (no display name) and lowercases it.
func parseEmail(field, s string) (string, *apiError) {
	if len(s) > 254 {
		return "", badField(field, "is too long for an email address")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", badField(field, "%s is not an email address", quote(s))
	}
	return strings.ToLower(s), nil
}

// hasPrefixFold reports whether s starts with prefix, ignoring case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// canonicalHWID normalises a device id the same way in every call, so that
// one subscriber keeps one record key (and so one partition):
// "whatsapp:" and "sms:" ids get their number in E.164, email addresses are
// lowercased, other ids (push devices) are kept as sent. country is set for
// phone numbers.
func canonicalHWID(field, hwid string) (id, country string, _ *apiError) {
	switch {
	case hwid == "":
		return "", "", nil
	case hasPrefixFold(hwid, prefixWhatsApp):
		e164, c, err := parsePhone(field, hwid[len(prefixWhatsApp):])
		if err != nil {
			return "", "", err
		}
		return prefixWhatsApp + e164, c, nil
	case hasPrefixFold(hwid, prefixSMS):
		e164, c, err := parsePhone(field, hwid[len(prefixSMS):])
		if err != nil {
			return "", "", err
		}
		return prefixSMS + e164, c, nil
	}
	if err := checkText(field, hwid, maxIDLen); err != nil {
		return "", "", err
	}
	if strings.Contains(hwid, "@") {
		if e, err := parseEmail(field, hwid); err == nil {
			return e, "", nil
		}
	}
	return hwid, "", nil
}

// valueRules says which values a tags or attributes object takes.
type valueRules struct {
	// what is "tag" or "attribute", for messages.
	what string
	// listAny allows numbers and booleans in lists, not only strings.
	listAny bool
}

var (
	tagRules       = valueRules{what: "tag"}
	attributeRules = valueRules{what: "attribute", listAny: true}
)

// decodeValues decodes a tags or attributes object: name to string,
// number, boolean, list, or null. Nested objects are refused, naming
// <field>.<name>. Absent or null gives nil.
func decodeValues(field string, raw json.RawMessage, rules valueRules) (map[string]any, *apiError) {
	obj, names, aerr := decodeNamed(field, raw, rules)
	if aerr != nil || len(obj) == 0 {
		return nil, aerr
	}
	for _, name := range names {
		if err := checkValue(field+"."+name, obj[name], rules); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// decodeNamed decodes an object of tag or attribute names to values in one
// pass (numbers kept as sent, json.Number: no float rounding of ids) and
// checks the names; names are sorted so that the first error named is the
// same on every call. Absent or null gives nil.
func decodeNamed(field string, raw json.RawMessage, rules valueRules) (map[string]any, []string, *apiError) {
	if isNull(raw) {
		return nil, nil, nil
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, nil, badField(field, "malformed value: %v", err)
		}
		return nil, nil, badField(field, "must be an object of %s names to values", rules.what)
	}
	if len(obj) > maxValues {
		return nil, nil, badField(field, "has %d %ss, at most %d are allowed", len(obj), rules.what, maxValues)
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == "" {
			return nil, nil, badField(field, "has an empty %s name", rules.what)
		}
		if err := checkText(field+"."+name, name, maxNameLen); err != nil {
			return nil, nil, err
		}
	}
	return obj, names, nil
}

// checkValue checks one decoded tag or attribute value.
func checkValue(field string, v any, rules valueRules) *apiError {
	want := "a string, number, boolean, list of strings or null"
	if rules.listAny {
		want = "a string, number, boolean, list of those, or null"
	}
	switch x := v.(type) {
	case nil, bool:
		return nil
	case string:
		return checkValueString(field, x)
	case json.Number:
		return checkNumber(field, x)
	case []any:
		if len(x) > maxListLen {
			return badField(field, "has %d items, at most %d are allowed", len(x), maxListLen)
		}
		for i, item := range x {
			itf := fmt.Sprintf("%s[%d]", field, i)
			switch it := item.(type) {
			case string:
				if err := checkValueString(itf, it); err != nil {
					return err
				}
			case json.Number:
				if !rules.listAny {
					return badField(field, "a %s list holds strings only, item %d is a number", rules.what, i)
				}
				if err := checkNumber(itf, it); err != nil {
					return err
				}
			case bool:
				if !rules.listAny {
					return badField(field, "a %s list holds strings only, item %d is a boolean", rules.what, i)
				}
			default:
				return badField(field, "list items must be strings%s, item %d is not",
					map[bool]string{true: ", numbers or booleans", false: ""}[rules.listAny], i)
			}
		}
		return nil
	case map[string]any:
		return badField(field, "nested objects are not allowed; a %s value is %s", rules.what, want)
	}
	return badField(field, "must be %s", want)
}

func checkValueString(field, s string) *apiError {
	if len(s) > maxStringValue {
		return badField(field, "is %d bytes long, at most %d are allowed", len(s), maxStringValue)
	}
	if !utf8.ValidString(s) {
		return badField(field, "is not valid UTF-8")
	}
	return nil
}

// checkNumber refuses numbers a float64 cannot hold: consumers decode them
// into float64 and would fail on the record.
func checkNumber(field string, n json.Number) *apiError {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(f, 0) {
		return badField(field, "number %s is out of range", quote(string(n)))
	}
	return nil
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// languageRe is a BCP 47-ish language tag: "en", "pt-BR", "zh_Hant_TW".
var languageRe = regexp.MustCompile(`^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$`)

func checkLanguage(field, s string) *apiError {
	if s == "" {
		return nil
	}
	if len(s) > 35 || !languageRe.MatchString(s) {
		return badField(field, "%s is not a language code, e.g. en or pt-BR", quote(s))
	}
	return nil
}

const maxTZOffset = 14 * 3600

// parseTimezone takes an IANA zone name ("Europe/Berlin"), an offset
// string ("+05:30") or, as Pushwoosh SDKs send it, an offset in seconds
// (19800). Names are kept; offsets are returned as "+HH:MM".
func parseTimezone(field string, raw json.RawMessage) (string, *apiError) {
	if isNull(raw) {
		return "", nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", badField(field, "malformed value: %v", err)
	}
	switch x := v.(type) {
	case string:
		if x == "" {
			return "", nil
		}
		if off, ok := parseOffset(x); ok {
			return formatOffset(off), nil
		}
		if len(x) <= 64 && x != "Local" && checkText(field, x, 64) == nil {
			if _, err := time.LoadLocation(x); err == nil {
				return x, nil
			}
		}
		return "", badField(field, "%s is not an IANA time zone (e.g. Europe/Berlin) or an offset (+05:30)", quote(x))
	case json.Number:
		sec, err := x.Int64()
		if err != nil || sec < -maxTZOffset || sec > maxTZOffset || sec%60 != 0 {
			return "", badField(field, "offset %s must be whole minutes in seconds between -50400 and 50400", quote(string(x)))
		}
		return formatOffset(int(sec)), nil
	}
	return "", badField(field, "must be a time zone name or an offset in seconds")
}

// parseOffset parses "+HH:MM" / "-HH:MM" into seconds.
func parseOffset(s string) (int, bool) {
	if len(s) != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':' {
		return 0, false
	}
	h, err1 := strconv.Atoi(s[1:3])
	m, err2 := strconv.Atoi(s[4:6])
	if err1 != nil || err2 != nil || m > 59 || h*3600+m*60 > maxTZOffset {
		return 0, false
	}
	off := h*3600 + m*60
	if s[0] == '-' {
		off = -off
	}
	return off, true
}

func formatOffset(sec int) string {
	sign := '+'
	if sec < 0 {
		sign, sec = '-', -sec
	}
	return fmt.Sprintf("%c%02d:%02d", sign, sec/3600, sec%3600/60)
}

// maxFuture is how far ahead of now an event's timestampUTC may be.
const maxFuture = 24 * time.Hour

// parseTimestamp takes unix seconds (fractions allowed) and refuses times
// before 1970 or more than a day ahead of now. Absent gives now.
func parseTimestamp(field string, raw json.RawMessage, now time.Time) (time.Time, *apiError) {
	if isNull(raw) {
		return now, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	// A json.Number also takes a quoted number; Pushwoosh's type is a number.
	if err := dec.Decode(&n); err != nil || bytes.HasPrefix(bytes.TrimSpace(raw), []byte(`"`)) {
		return time.Time{}, badField(field, "must be a number of unix seconds")
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(f, 0) || f <= 0 {
		return time.Time{}, badField(field, "%s must be positive unix seconds", quote(string(n)))
	}
	limit := now.Add(maxFuture)
	if f > float64(limit.Unix()+1) {
		return time.Time{}, badField(field, "%s is more than %s in the future", quote(string(n)), maxFuture)
	}
	sec, frac := math.Modf(f)
	t := time.Unix(int64(sec), int64(math.Round(frac*1e3))*int64(time.Millisecond)).UTC()
	if t.After(limit) {
		return time.Time{}, badField(field, "%s is more than %s in the future", quote(string(n)), maxFuture)
	}
	return t, nil
}

var errNotDigits = errors.New("not digits")

// parseUnix parses Meta's timestamp: unix seconds as a string or a number.
func parseUnix(raw json.RawMessage) (time.Time, error) {
	if isNull(raw) {
		return time.Time{}, nil
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return time.Time{}, err
		}
	} else {
		s = string(raw)
	}
	if s == "" || len(s) > 12 || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return time.Time{}, fmt.Errorf("timestamp %s: %w", quote(s), errNotDigits)
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %s: %w", quote(s), err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

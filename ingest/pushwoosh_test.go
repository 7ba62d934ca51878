package ingest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

const (
	pathRegister = "/json/1.3/registerDevice"
	pathSetTags  = "/json/1.3/setTags"
	pathEvent    = "/json/1.3/postEvent"
)

func TestRegisterDevice(t *testing.T) {
	tests := []struct {
		name   string
		header string // API token sent in the Authorization header
		body   string
		want   *schemas.Event
	}{{
		name:   "whatsapp, formatted number, all optional fields",
		header: shopToken,
		body: `{"request":{"application":"shop","device_type":21,"hwid":"whatsapp:+1 (650) 555-1234",
			"userId":"u-42","language":"pt-BR","timezone":"America/Sao_Paulo","app_version":"2.10.1",
			"tags":{"Plan":"gold","Orders":3,"VIP":true,"Foods":["asian","sushi"],"Old":null}}}`,
		want: &schemas.Event{
			App: "shop", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			HWID: "whatsapp:+16505551234", UserID: "u-42", DeviceType: 21, Language: "pt-BR", AppVersion: "2.10.1",
			Timezone: "America/Sao_Paulo", Country: "US",
			Tags:     map[string]any{"Plan": "gold", "Orders": 3, "VIP": true, "Foods": []string{"asian", "sushi"}, "Old": nil},
			TagTypes: map[string]string{"Plan": "string", "Orders": "integer", "VIP": "boolean", "Foods": "list"},
		},
	}, {
		name: "whatsapp, token in request.auth, offset in seconds",
		body: `{"request":{"application":"news","auth":"` + newsToken + `","device_type":21,
			"hwid":"WhatsApp:+44 (0)7400 123 456","timezone":19800}}`,
		want: &schemas.Event{
			App: "news", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			HWID: "whatsapp:+447400123456", DeviceType: 21, Timezone: "+05:30", Country: "GB",
		},
	}, {
		name:   "whatsapp with the user's email and app push token",
		header: shopToken,
		body:   `{"request":{"application":"shop","device_type":21,"hwid":"whatsapp:+16505551234","email":"Ana@Example.com","push_token":"fcm-tok-1"}}`,
		want: &schemas.Event{
			App: "shop", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			HWID: "whatsapp:+16505551234", DeviceType: 21, Country: "US", Email: "ana@example.com", PushToken: "fcm-tok-1",
		},
	}, {
		name:   "sms",
		header: shopToken,
		body:   `{"request":{"application":"shop","device_type":18,"hwid":"sms:+49 151 23456789","timezone":"-03:00"}}`,
		want: &schemas.Event{
			App: "shop", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			HWID: "sms:+4915123456789", DeviceType: 18, Timezone: "-03:00", Country: "DE",
		},
	}, {
		name:   "email, lowercased",
		header: shopToken,
		body:   `{"request":{"application":"shop","device_type":14,"email":"Ana.Silva@Example.COM","userId":"ana"}}`,
		want: &schemas.Event{
			App: "shop", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			HWID: "ana.silva@example.com", UserID: "ana", DeviceType: 14, Email: "ana.silva@example.com",
		},
	}, {
		name:   "ios push",
		header: shopToken,
		body:   `{"request":{"application":"shop","device_type":1,"hwid":"A1B2-C3D4","push_token":"apns-token-xyz","language":"en"}}`,
		want: &schemas.Event{
			App: "shop", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			HWID: "A1B2-C3D4", DeviceType: 1, Language: "en", PushToken: "apns-token-xyz",
		},
	}, {
		name:   "android push",
		header: otherToken,
		body:   `{"request":{"application":"other","device_type":3,"hwid":"droid-1","push_token":"fcm:abc"}}`,
		want: &schemas.Event{
			App: "other", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			HWID: "droid-1", DeviceType: 3, PushToken: "fcm:abc",
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			from := time.Now()
			resp := wantOK(t, h.post(pathRegister, tc.header, tc.body))
			to := time.Now()
			evs := h.events(1)
			sameEvent(t, evs[0], tc.want, from, to)
			if evs[0].Time != evs[0].Received {
				t.Fatalf("time %s != received %s", evs[0].Time, evs[0].Received)
			}
			if resp["event_id"] != evs[0].ID {
				t.Fatalf("answer event_id %v, record id %s", resp["event_id"], evs[0].ID)
			}
			if h.endOffset(schemas.TopicDeadLetter) != 0 {
				t.Fatal("dead letters produced")
			}
		})
	}
}

func TestSetTags(t *testing.T) {
	h := newHarness(t, Config{})
	from := time.Now()
	wantOK(t, h.post(pathSetTags, shopToken, `{"request":{"application":"shop","hwid":"whatsapp:+16505551234",
		"tags":{"Plan":"silver","Big":12345678901234567890,"Ratio":0.25,"Old":null,"Langs":[]}}}`))
	wantOK(t, h.post(pathSetTags, shopToken, `{"request":{"application":"shop","userId":"u-42","tags":{"Opted":false}}}`))
	to := time.Now()
	evs := h.events(2)
	// One key each, so any partition order; sort by user id presence.
	if evs[0].UserID != "" {
		evs[0], evs[1] = evs[1], evs[0]
	}
	sameEvent(t, evs[0], &schemas.Event{
		App: "shop", Kind: schemas.KindTags, HWID: "whatsapp:+16505551234", Country: "US",
		Tags:     map[string]any{"Plan": "silver", "Big": float64(12345678901234567890), "Ratio": 0.25, "Old": nil, "Langs": []string{}},
		TagTypes: map[string]string{"Plan": "string", "Big": "decimal", "Ratio": "decimal", "Langs": "list"},
	}, from, to)
	sameEvent(t, evs[1], &schemas.Event{
		App: "shop", Kind: schemas.KindTags, UserID: "u-42",
		Tags: map[string]any{"Opted": false}, TagTypes: map[string]string{"Opted": "boolean"},
	}, from, to)
	// Big numbers travel as sent, not rounded through float64.
	recs := h.records(schemas.TopicEvents, 2)
	found := false
	for _, r := range recs {
		found = found || strings.Contains(string(r.Value), `"Big":12345678901234567890`)
	}
	if !found {
		t.Fatal("the big tag number was not kept exactly")
	}
}

func TestPostEvent(t *testing.T) {
	h := newHarness(t, Config{})
	from := time.Now()
	wantOK(t, h.post(pathEvent, shopToken, `{"request":{"application":"shop","hwid":"whatsapp:+16505551234",
		"event":"OrderPlaced","attributes":{"cuisine":"asian","total":42.5,"items":["roll",2,true]},"timestampUTC":1750000000}}`))
	wantOK(t, h.post(pathEvent, shopToken, `{"request":{"application":"shop","userId":"u-42","event":"PW_ApplicationOpen","timestampUTC":1750000000.25}}`))
	wantOK(t, h.post(pathEvent, shopToken, `{"request":{"application":"shop","userId":"u-43","event":"Login"}}`))
	to := time.Now()
	evs := h.events(3)
	byUser := map[string]*schemas.Event{}
	for _, e := range evs {
		byUser[e.UserID] = e
	}
	sameEvent(t, byUser[""], &schemas.Event{
		App: "shop", Kind: schemas.KindEvent, Name: "OrderPlaced",
		Time: time.Unix(1750000000, 0).UTC(), HWID: "whatsapp:+16505551234", Country: "US",
		Attributes: map[string]any{"cuisine": "asian", "total": 42.5, "items": []any{"roll", 2, true}},
	}, from, to)
	sameEvent(t, byUser["u-42"], &schemas.Event{
		App: "shop", Kind: schemas.KindEvent, Name: "PW_ApplicationOpen",
		Time: time.Unix(1750000000, 250e6).UTC(), UserID: "u-42",
	}, from, to)
	sameEvent(t, byUser["u-43"], &schemas.Event{App: "shop", Kind: schemas.KindEvent, Name: "Login", UserID: "u-43"}, from, to)
}

// TestOneUserOneKey: however a WhatsApp number is written, and whether it
// comes from the API or from Meta, one user has one key and one partition.
func TestOneUserOneKey(t *testing.T) {
	h := newHarness(t, Config{})
	wantOK(t, h.post(pathRegister, shopToken, `{"request":{"application":"shop","device_type":21,"hwid":"whatsapp:+1 (650) 555-1234"}}`))
	wantOK(t, h.post(pathSetTags, shopToken, `{"request":{"application":"shop","hwid":"whatsapp:+16505551234","tags":{"a":"b"}}}`))
	wantOK(t, h.post(pathEvent, shopToken, `{"request":{"application":"shop","hwid":"WHATSAPP:+1.650.555.1234","event":"X"}}`))
	wantOK(t, h.webhook(secretA, textDelivery(shopPhone1, "16505551234", "wamid.one", "hi")))
	recs := h.records(schemas.TopicEvents, 4)
	for _, r := range recs {
		if string(r.Key) != "shop|whatsapp:+16505551234" || r.Partition != recs[0].Partition {
			t.Fatalf("record key %q partition %d, want shop|whatsapp:+16505551234 on partition %d", r.Key, r.Partition, recs[0].Partition)
		}
	}
}

func TestPushwooshRejects(t *testing.T) {
	reg := func(fields string) string {
		return `{"request":{"application":"shop",` + fields + `}}`
	}
	wa := `"device_type":21,"hwid":"whatsapp:+16505551234"`
	future := time.Now().Add(25 * time.Hour).Unix()
	tests := []struct {
		name   string
		path   string
		header []string
		body   string
		code   int
		field  string
	}{
		{"malformed json", pathRegister, nil, `{"request":{"application":"shop",}}`, 400, "body"},
		{"truncated json", pathRegister, nil, `{"request":{"application":"shop"`, 400, "body"},
		{"empty body", pathRegister, nil, ``, 400, "body"},
		{"body is a list", pathRegister, nil, `[1,2]`, 400, "body"},
		{"data after the object", pathRegister, nil, reg(wa) + `{}`, 400, "body"},
		{"no request", pathRegister, nil, `{"application":"shop"}`, 400, "request"},
		{"request is a string", pathRegister, nil, `{"request":"shop"}`, 400, "request"},
		{"no token", pathRegister, []string{}, reg(wa), 401, "request.auth"},
		{"unknown header token", pathRegister, []string{"Authorization", "Token nope-nope-nope-nope"}, reg(wa), 401, "Authorization"},
		{"bearer scheme", pathRegister, []string{"Authorization", "Bearer " + shopToken}, reg(wa), 401, "Authorization"},
		{"unknown request.auth", pathRegister, []string{}, reg(`"auth":"nope-nope-nope-nope",` + wa), 401, "request.auth"},
		{"header and request.auth differ", pathRegister, nil, reg(`"auth":"` + newsToken + `",` + wa), 401, "request.auth"},
		{"missing application", pathRegister, nil, `{"request":{` + wa + `}}`, 400, "request.application"},
		{"token of another app", pathRegister, []string{"Authorization", "Token " + newsToken}, reg(wa), 403, "request.application"},
		{"token of another app in request.auth", pathSetTags, []string{}, reg(`"auth":"` + otherToken + `","userId":"u","tags":{"a":1}`), 403, "request.application"},
		{"unknown application", pathEvent, nil, `{"request":{"application":"nobody","userId":"u","event":"E"}}`, 403, "request.application"},
		{"application is a number", pathRegister, nil, `{"request":{"application":7,` + wa + `}}`, 400, "request.application"},
		{"missing device type", pathRegister, nil, reg(`"hwid":"whatsapp:+16505551234"`), 400, "request.device_type"},
		{"device type is a string", pathRegister, nil, reg(`"device_type":"21","hwid":"whatsapp:+16505551234"`), 400, "request.device_type"},
		{"unknown device type", pathRegister, nil, reg(`"device_type":7,"hwid":"x"`), 400, "request.device_type"},
		{"whatsapp without hwid", pathRegister, nil, reg(`"device_type":21`), 400, "request.hwid"},
		{"whatsapp with an sms hwid", pathRegister, nil, reg(`"device_type":21,"hwid":"sms:+16505551234"`), 400, "request.hwid"},
		{"whatsapp with a bare number", pathRegister, nil, reg(`"device_type":21,"hwid":"+16505551234"`), 400, "request.hwid"},
		{"invalid phone number", pathRegister, nil, reg(`"device_type":21,"hwid":"whatsapp:+15550000000"`), 400, "request.hwid"},
		{"national number", pathRegister, nil, reg(`"device_type":21,"hwid":"whatsapp:06505551234"`), 400, "request.hwid"},
		{"letters in number", pathRegister, nil, reg(`"device_type":21,"hwid":"whatsapp:+1800FLOWERS"`), 400, "request.hwid"},
		{"extension", pathRegister, nil, reg(`"device_type":21,"hwid":"whatsapp:+16505551234 ext 5"`), 400, "request.hwid"},
		{"whatsapp fixed line", pathRegister, nil, reg(`"device_type":21,"hwid":"whatsapp:+442079460958"`), 400, "request.hwid"},
		{"sms toll free", pathRegister, nil, reg(`"device_type":18,"hwid":"sms:+18002752273"`), 400, "request.hwid"},
		{"whatsapp premium rate", pathRegister, nil, reg(`"device_type":21,"hwid":"whatsapp:+4990012345678"`), 400, "request.hwid"},
		{"sms invalid number", pathRegister, nil, reg(`"device_type":18,"hwid":"sms:+1234"`), 400, "request.hwid"},
		{"email invalid", pathRegister, nil, reg(`"device_type":14,"email":"Ana <ana@example.com>"`), 400, "request.email"},
		{"email missing", pathRegister, nil, reg(`"device_type":14`), 400, "request.email"},
		{"email and other hwid", pathRegister, nil, reg(`"device_type":14,"email":"a@example.com","hwid":"b@example.com"`), 400, "request.hwid"},
		{"push without token", pathRegister, nil, reg(`"device_type":3,"hwid":"d1"`), 400, "request.push_token"},
		{"push with whatsapp hwid", pathRegister, nil, reg(`"device_type":1,"hwid":"whatsapp:+16505551234","push_token":"t"`), 400, "request.hwid"},
		{"hwid with control character", pathRegister, nil, reg(`"device_type":3,"hwid":"d\u0000","push_token":"t"`), 400, "request.hwid"},
		{"bad language", pathRegister, nil, reg(wa + `,"language":"english!"`), 400, "request.language"},
		{"app version too long", pathRegister, nil, reg(wa + `,"app_version":"` + strings.Repeat("9", 65) + `"`), 400, "request.app_version"},
		{"app version is a number", pathRegister, nil, reg(wa + `,"app_version":2`), 400, "request.app_version"},
		{"bad time zone", pathRegister, nil, reg(wa + `,"timezone":"Mars/Olympus"`), 400, "request.timezone"},
		{"time zone offset out of range", pathRegister, nil, reg(wa + `,"timezone":99999`), 400, "request.timezone"},
		{"time zone is an object", pathRegister, nil, reg(wa + `,"timezone":{}`), 400, "request.timezone"},
		{"userId is a number", pathRegister, nil, reg(wa + `,"userId":42`), 400, "request.userId"},
		{"nested tag object", pathRegister, nil, reg(wa + `,"tags":{"Plan":"gold","address":{"city":"Rio"}}`), 400, "request.tags.address"},
		{"tag list with a number", pathSetTags, nil, reg(`"userId":"u","tags":{"scores":["a",1]}`), 400, "request.tags.scores"},
		{"tag list with an object", pathSetTags, nil, reg(`"userId":"u","tags":{"scores":[{}]}`), 400, "request.tags.scores"},
		{"tags is a list", pathSetTags, nil, reg(`"userId":"u","tags":["a"]`), 400, "request.tags"},
		{"tag number out of range", pathSetTags, nil, reg(`"userId":"u","tags":{"big":1e400}`), 400, "request.tags.big"},
		{"empty tag name", pathSetTags, nil, reg(`"userId":"u","tags":{"":1}`), 400, "request.tags"},
		{"setTags without user", pathSetTags, nil, reg(`"tags":{"a":1}`), 400, "request.hwid"},
		{"setTags without tags", pathSetTags, nil, reg(`"userId":"u"`), 400, "request.tags"},
		{"setTags with empty tags", pathSetTags, nil, reg(`"userId":"u","tags":{}`), 400, "request.tags"},
		{"setTags invalid whatsapp hwid", pathSetTags, nil, reg(`"hwid":"whatsapp:+1","tags":{"a":1}`), 400, "request.hwid"},
		{"postEvent without event", pathEvent, nil, reg(`"userId":"u"`), 400, "request.event"},
		{"postEvent without user", pathEvent, nil, reg(`"event":"E"`), 400, "request.hwid"},
		{"postEvent reserved name", pathEvent, nil, reg(`"userId":"u","event":"PW_WhatsAppReceived"`), 400, "request.event"},
		{"postEvent fakes a segment entry", pathEvent, nil, reg(`"userId":"u","event":"pw_segmententered"`), 400, "request.event"},
		{"postEvent nested attribute", pathEvent, nil, reg(`"userId":"u","event":"E","attributes":{"cart":{"id":1}}`), 400, "request.attributes.cart"},
		{"postEvent far future", pathEvent, nil, reg(fmt.Sprintf(`"userId":"u","event":"E","timestampUTC":%d`, future)), 400, "request.timestampUTC"},
		{"postEvent huge timestamp", pathEvent, nil, reg(`"userId":"u","event":"E","timestampUTC":1e300`), 400, "request.timestampUTC"},
		{"postEvent negative timestamp", pathEvent, nil, reg(`"userId":"u","event":"E","timestampUTC":-5`), 400, "request.timestampUTC"},
		{"postEvent timestamp string", pathEvent, nil, reg(`"userId":"u","event":"E","timestampUTC":"1750000000"`), 400, "request.timestampUTC"},
	}
	h := newHarness(t, Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := tc.header
			if hdr == nil {
				hdr = []string{"Authorization", "Token " + shopToken}
			}
			rec := h.do(http.MethodPost, tc.path, tc.body, hdr...)
			wantError(t, rec, tc.code, tc.field)
			h.noRecords()
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	h := newHarness(t, Config{MaxBodyBytes: 128})
	big := `{"request":{"application":"shop","userId":"u","tags":{"a":"` + strings.Repeat("x", 200) + `"}}}`
	wantError(t, h.post(pathSetTags, shopToken, big), http.StatusRequestEntityTooLarge, "body")
	wantError(t, h.webhook(secretA, textDelivery(shopPhone1, "16505551234", "wamid.big", strings.Repeat("y", 200))),
		http.StatusRequestEntityTooLarge, "body")
	// At the limit is fine.
	small := `{"request":{"application":"shop","userId":"u","tags":{"a":"b"}}}`
	wantOK(t, h.post(pathSetTags, shopToken, small+strings.Repeat(" ", 128-len(small))))
	h.events(1)
}

func TestRouting(t *testing.T) {
	h := newHarness(t, Config{})
	tests := []struct {
		name   string
		method string
		path   string
		code   int
		allow  string
	}{
		{"unknown path", http.MethodPost, "/json/1.3/createMessage", 404, ""},
		{"root", http.MethodGet, "/", 404, ""},
		{"trailing slash", http.MethodPost, "/json/1.3/registerDevice/", 404, ""},
		{"GET on a POST method", http.MethodGet, pathRegister, 405, "POST"},
		{"PUT on the webhook", http.MethodPut, "/whatsapp/webhooks", 405, "GET, POST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.do(tc.method, tc.path, `{}`)
			wantError(t, rec, tc.code, "")
			if got := rec.Header().Get("Allow"); got != tc.allow {
				t.Fatalf("Allow %q, want %q", got, tc.allow)
			}
		})
	}
	h.noRecords()
}

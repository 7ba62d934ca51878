package ingest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// fuzzServer is a Server whose client is never used: the fuzz targets call
// the decoders, not Kafka.
func fuzzServer(f *testing.F) *Server {
	f.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(cl.Close)
	s, err := New(Config{}, testRegistry(f), cl, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	return s
}

// checkRefusal: a refusal is a 4xx that names its field in the message.
func checkRefusal(t *testing.T, e *apiError) {
	t.Helper()
	if e.Code < 400 || e.Code > 499 {
		t.Fatalf("refusal with status %d: %v", e.Code, e)
	}
	if e.Msg == "" {
		t.Fatalf("refusal without a message: %+v", e)
	}
	if e.Field != "" && !strings.HasPrefix(e.Error(), e.Field+": ") {
		t.Fatalf("message %q does not name field %q", e.Error(), e.Field)
	}
}

// checkEvent: an accepted event is valid and survives its trip through Kafka.
func checkEvent(t *testing.T, ev *schemas.Event) {
	t.Helper()
	if err := ev.Validate(); err != nil {
		t.Fatalf("accepted an invalid event: %v (%+v)", err, ev)
	}
	b, err := ev.Marshal()
	if err != nil {
		t.Fatalf("marshaling: %v", err)
	}
	back, err := schemas.DecodeEvent(b)
	if err != nil {
		t.Fatalf("the record does not decode: %v\n%s", err, b)
	}
	if back.ID != ev.ID || string(back.Key()) != string(ev.Key()) {
		t.Fatalf("round trip changed id or key: %s", b)
	}
}

func FuzzPushwoosh(f *testing.F) {
	s := fuzzServer(f)
	auth := "Token " + shopToken
	for _, seed := range []struct {
		method uint8
		auth   string
		body   string
	}{
		{0, auth, `{"request":{"application":"shop","device_type":21,"hwid":"whatsapp:+1 (650) 555-1234","userId":"u","language":"en","timezone":"Europe/Berlin","tags":{"a":"b","n":1,"l":["x"],"z":null}}}`},
		{0, "", `{"request":{"application":"shop","auth":"` + shopToken + `","device_type":18,"hwid":"sms:+4915123456789","timezone":19800}}`},
		{0, auth, `{"request":{"application":"shop","device_type":14,"email":"A@b.co"}}`},
		{0, auth, `{"request":{"application":"shop","device_type":3,"hwid":"d","push_token":"t"}}`},
		{0, auth, `{"request":{"application":"shop","device_type":99}}`},
		{1, auth, `{"request":{"application":"shop","hwid":"whatsapp:+16505551234","tags":{"a":{"b":1}}}}`},
		{1, auth, `{"request":{"application":"shop","userId":"u","tags":{"big":1e400,"t":true}}}`},
		{2, auth, `{"request":{"application":"shop","userId":"u","event":"E","attributes":{"x":[1,"a",false]},"timestampUTC":1750000000.5}}`},
		{2, "Token " + newsToken, `{"request":{"application":"shop","userId":"u","event":"E"}}`},
		{2, auth, `{"request":{"application":"shop","userId":"u","event":"E","timestampUTC":-1e308}}`},
		{0, auth, `{"request":{"application":"shop",}}`},
		{0, auth, `[]`},
		{3, auth, `{"request":{"application":"shop","hwid":"whatsapp:+16505551234"}}`},
		{4, auth, `{"request":{"application":"shop","userId":"u","hwid":"h","device_type":3}}`},
		{5, auth, `{"request":{"application":"shop","notifications":[{"content_id":"t","devices":["+16505551234"],"content_variables":{"1":"a"},"button_url_variables":["x"]},{"content":"hi\n","devices":["whatsapp:+4915123456789"]}]}}`},
		{1, auth, `{"request":{"application":"shop","userId":"u","tags":{"n":{"operation":"increment","value":1},"d":"2026-01-01 10:00","v":"1.2"},"tag_types":{"v":"version"}}}`},
		{0, auth, ``},
	} {
		f.Add(seed.method, seed.auth, []byte(seed.body))
	}
	builders := []builder{buildRegister, buildSetTags, buildPostEvent, buildUnregister, buildRegisterUser}
	now := time.Unix(1750000000, 0).UTC()
	f.Fuzz(func(t *testing.T, method uint8, authHeader string, body []byte) {
		if int(method)%(len(builders)+1) == len(builders) {
			reqs, _, _, aerr := s.buildWhatsAppMessages(authHeader, body, now)
			if aerr != nil {
				checkRefusal(t, aerr)
				return
			}
			for _, d := range reqs {
				if err := d.Validate(); err != nil {
					t.Fatalf("invalid dispatch request: %v", err)
				}
				if !d.SendAt.IsZero() && (!d.SendAt.After(now) || d.SendAt.After(now.Add(schemas.MaxScheduleAhead)) || !d.Deadline.After(d.SendAt)) {
					t.Fatalf("send_at %s, deadline %s: want within (now, now+%s] and before the deadline", d.SendAt, d.Deadline, schemas.MaxScheduleAhead)
				}
				if _, err := d.Marshal(); err != nil {
					t.Fatal(err)
				}
			}
			return
		}
		ev, aerr := builders[int(method)%(len(builders)+1)](s, authHeader, body, now)
		if aerr != nil {
			checkRefusal(t, aerr)
			return
		}
		checkEvent(t, ev)
		if ev.App != "shop" && ev.App != "news" && ev.App != "other" {
			t.Fatalf("event for app %q", ev.App)
		}
	})
}

func FuzzWebhook(f *testing.F) {
	s := fuzzServer(f)
	for _, seed := range []string{
		bigDelivery(),
		textDelivery(shopPhone1, "16505551234", "wamid.1", "hi"),
		payload(entry("w", change(value(shopPhone1, nil, []obj{
			{"from": "16505551234", "id": "r", "timestamp": "1749419544", "type": "reaction", "reaction": obj{"message_id": "m", "emoji": "👍"}},
			{"from": "16505551234", "id": "l", "timestamp": "1744344496", "type": "location", "location": obj{"latitude": 37.4, "longitude": -122.1, "name": "Philz"}},
			{"from": "16505551234", "id": "s", "timestamp": "1750269342", "type": "system", "system": obj{"body": "changed", "wa_id": "12195555358", "type": "user_changed_number"}},
			{"from": "16505551234", "id": "u", "timestamp": "1750090702", "type": "unsupported", "errors": []obj{{"code": 131051, "title": "Message type unknown"}}},
			{"from": "16505551234", "id": "d", "timestamp": "1750090702", "type": "document", "document": obj{"id": "1", "mime_type": "application/pdf", "filename": "r.pdf"}},
			{
				"from": "16505551234", "id": "a", "timestamp": "1750275992", "type": "text", "text": obj{"body": "ad"},
				"referral": obj{"source_id": "120", "source_type": "ad", "ctwa_clid": "clid"},
			},
		}, nil)))),
		`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1001"},"statuses":[{"id":"w","status":"sent","timestamp":1,"recipient_id":"16505551234","errors":[{"code":"x"}]}]}}]}]}`,
		`{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","time":1750000000,"changes":[{"field":"message_template_status_update","value":{"event":"APPROVED","message_template_id":12,"message_template_name":"n","message_template_language":"en_US"}},{"field":"template_category_update","value":{"message_template_id":"x"}}]}]}`,
		`{"object":"page"}`,
		`{"entry":[{"changes":[{"field":"messages","value":null}]}]}`,
		`{`,
	} {
		f.Add([]byte(seed))
	}
	now := time.Unix(1750000000, 0).UTC()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, secret := range []string{secretA, secretB} {
			b, aerr := s.parseWebhook(body, secret, now)
			if aerr != nil {
				checkRefusal(t, aerr)
				if aerr.Code != http.StatusBadRequest {
					t.Fatalf("parse refusal %d, want 400", aerr.Code)
				}
				continue
			}
			for _, ev := range b.events {
				checkEvent(t, ev)
				owner, ok := s.reg.ByID(ev.App)
				if !ok || owner.WhatsApp.AppSecret != secret {
					t.Fatalf("event for app %s accepted with a secret that is not its own", ev.App)
				}
			}
			for _, d := range b.dead {
				if err := d.Validate(); err != nil {
					t.Fatalf("invalid dead letter: %v", err)
				}
				if _, err := d.Marshal(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	s := fuzzServer(f)
	body := textDelivery(shopPhone1, "16505551234", "wamid.1", "hi")
	f.Add(sign(secretA, body), []byte(body))
	f.Add("sha256=", []byte(body))
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		secret, aerr := s.verifySignature(header, body)
		if aerr != nil {
			if aerr.Code != http.StatusUnauthorized || aerr.Field != signatureHeader {
				t.Fatalf("refusal %+v", aerr)
			}
			return
		}
		// Only a real signature passes.
		if header != sign(secret, string(body)) && !strings.EqualFold(header, sign(secret, string(body))) {
			t.Fatalf("header %q accepted for secret %q", header, secret)
		}
	})
}

func FuzzSegment(f *testing.F) {
	s := fuzzServer(f)
	for _, seed := range []struct {
		typ  uint8
		body string
	}{
		{0, `{"userId":"u","event":"Order","properties":{"a":{"b":[{"c":1}]},"n":1e3,"l":["x",1,true]},"context":{"locale":"pt_BR","timezone":"America/Sao_Paulo"}}`},
		{1, `{"anonymousId":7,"traits":{"x":{"y":{"z":{"w":1}}}},"timestamp":"2026-01-01T00:00:00Z"}`},
		{2, `{"userId":"u","name":"Home","originalTimestamp":"2026-01-01T00:00:00Z","sentAt":"2026-01-01T00:00:05Z"}`},
		{4, `{"userId":"u","groupId":"g","traits":null}`},
		{5, `{"userId":"u","previousId":"p"}`},
		{6, `{"batch":[{"type":"track","userId":"u","event":"E","messageId":"m"},{"type":"alias","userId":"u","previousId":"a"}],"context":{"ip":"1"},"sentAt":"2026-01-01T00:00:00Z"}`},
		{6, `{"batch":[1,null,{"type":""}]}`},
		{0, `{`},
	} {
		f.Add(seed.typ, []byte(seed.body))
	}
	types := []string{segTrack, segIdentify, segPage, segScreen, segGroup, segAlias, segBatch}
	now := time.Unix(1750000000, 0).UTC()
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		kind := types[int(typ)%len(types)]
		r := httptest.NewRequest(http.MethodPost, "/v1/"+kind, nil)
		r.SetBasicAuth(shopKey, "")
		var (
			events []*schemas.Event
			aerr   *apiError
		)
		if kind == segBatch {
			events, aerr = s.segmentBatch(r, body, now)
		} else {
			events, aerr = s.segmentOne(r, kind, body, now)
		}
		if aerr != nil {
			checkRefusal(t, aerr)
			return
		}
		for _, ev := range events {
			checkEvent(t, ev)
			if ev.App != "shop" {
				t.Fatalf("event for app %q", ev.App)
			}
		}
	})
}

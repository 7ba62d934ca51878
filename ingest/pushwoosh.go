package ingest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// pwRequest is the "request" object of the Pushwoosh methods served here
// (https://docs.pushwoosh.com/developer/api-reference/). Fields a method
// does not use are ignored, as are unknown fields, so that clients written
// for Pushwoosh keep working.
type pwRequest struct {
	Application  string          `json:"application"`
	Auth         string          `json:"auth"`
	HWID         string          `json:"hwid"`
	UserID       string          `json:"userId"`
	DeviceType   *int            `json:"device_type"`
	PushToken    string          `json:"push_token"`
	Email        string          `json:"email"`
	Language     string          `json:"language"`
	AppVersion   string          `json:"app_version"`
	Timezone     json.RawMessage `json:"timezone"`
	Tags         json.RawMessage `json:"tags"`
	TagTypes     json.RawMessage `json:"tag_types"`
	Event        string          `json:"event"`
	Attributes   json.RawMessage `json:"attributes"`
	TimestampUTC json.RawMessage `json:"timestampUTC"`
}

// builder turns one Pushwoosh call (its Authorization header and body)
// into the event to produce, or the refusal to answer.
type builder func(s *Server, authHeader string, body []byte, now time.Time) (*schemas.Event, *apiError)

// pushwoosh serves one Pushwoosh method: decode, authorize, build, produce,
// and answer 200 only after Kafka acknowledged.
func (s *Server) pushwoosh(route string, build builder) func(*statusWriter, *http.Request) {
	return func(w *statusWriter, r *http.Request) {
		body, aerr := s.readBody(w, r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		ev, aerr := build(s, r.Header.Get("Authorization"), body, time.Now().UTC())
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		if err := ev.Validate(); err != nil { // a bug here, not the caller's fault
			s.log.Error("built an invalid event", "route", route, "err", err)
			writeError(w, &apiError{Code: http.StatusInternalServerError, Msg: "internal error"})
			return
		}
		if err := s.produce(r.Context(), []*schemas.Event{ev}, nil); err != nil {
			writeError(w, s.produceError(route, err))
			return
		}
		writeOK(w, map[string]string{"event_id": ev.ID})
	}
}

// decodeRequest decodes the {"request":{...}} envelope.
func decodeRequest(body []byte) (*pwRequest, *apiError) {
	var env struct {
		Request *pwRequest `json:"request"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&env); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, badField("body", "has data after the JSON object")
	}
	if env.Request == nil {
		return nil, badField("request", `is required: the body is {"request":{...}}`)
	}
	return env.Request, nil
}

// authorize finds the app of the call's API token (header
// "Authorization: Token <api_token>" or request.auth), checks that it is
// request.application (apps.Registry.Authorize: an app's token never
// writes another app's data) and applies the token's rate limit.
func (s *Server) authorize(authHeader string, req *pwRequest) (*apps.App, *apiError) {
	app, token, aerr := s.reg.Authorize(authHeader, req.Auth, req.Application)
	if aerr != nil {
		return nil, &apiError{Code: aerr.Code, Field: aerr.Field, Msg: aerr.Msg}
	}
	field := "request.auth"
	if authHeader != "" {
		field = "Authorization"
	}
	if ok, wait := s.lim.allow("token:" + token); !ok {
		s.m.throttled.Inc()
		return nil, throttled(field, wait)
	}
	return app, nil
}

// begin decodes and authorizes a call.
func (s *Server) begin(authHeader string, body []byte) (*pwRequest, *apps.App, *apiError) {
	req, aerr := decodeRequest(body)
	if aerr != nil {
		return nil, nil, aerr
	}
	app, aerr := s.authorize(authHeader, req)
	if aerr != nil {
		return nil, nil, aerr
	}
	return req, app, nil
}

// identify resolves the subscriber of setTags and postEvent: hwid,
// normalised as at registration, and/or userId, one of them required.
func identify(req *pwRequest) (hwid, userID, country string, _ *apiError) {
	hwid, country, aerr := canonicalHWID("request.hwid", req.HWID)
	if aerr != nil {
		return "", "", "", aerr
	}
	if aerr := checkText("request.userId", req.UserID, maxIDLen); aerr != nil {
		return "", "", "", aerr
	}
	if hwid == "" && req.UserID == "" {
		return "", "", "", badField("request.hwid", "hwid or userId is required")
	}
	return hwid, req.UserID, country, nil
}

// buildRegister is POST /json/1.3/registerDevice.
func buildRegister(s *Server, authHeader string, body []byte, now time.Time) (*schemas.Event, *apiError) {
	req, app, aerr := s.begin(authHeader, body)
	if aerr != nil {
		return nil, aerr
	}
	if req.DeviceType == nil {
		return nil, badField("request.device_type", "is required: 21 WhatsApp, 18 SMS, 14 email, 1 iOS, 3 Android")
	}
	ev := &schemas.Event{
		ID:         newEventID(),
		App:        app.ID,
		Kind:       schemas.KindRegister,
		Name:       schemas.EventDeviceRegistered,
		Time:       now,
		Received:   now,
		DeviceType: *req.DeviceType,
	}
	switch dt := *req.DeviceType; dt {
	case schemas.DeviceWhatsApp, schemas.DeviceSMS:
		prefix := prefixWhatsApp
		if dt == schemas.DeviceSMS {
			prefix = prefixSMS
		}
		if req.HWID == "" {
			return nil, badField("request.hwid", "is required: %s+<E.164 number> for device_type %d", prefix, dt)
		}
		if !hasPrefixFold(req.HWID, prefix) {
			return nil, badField("request.hwid", "%s must be %s+<E.164 number> for device_type %d", quote(req.HWID), prefix, dt)
		}
		if ev.HWID, ev.Country, aerr = canonicalHWID("request.hwid", req.HWID); aerr != nil {
			return nil, aerr
		}
		if aerr := checkReachable("request.hwid", ev.HWID[len(prefix):], dt); aerr != nil {
			return nil, aerr
		}
	case schemas.DeviceEmail:
		switch {
		case req.Email != "":
			if ev.HWID, aerr = parseEmail("request.email", req.Email); aerr != nil {
				return nil, aerr
			}
			ev.Email = ev.HWID
			if req.HWID != "" && !strings.EqualFold(req.HWID, req.Email) {
				return nil, badField("request.hwid", "must equal request.email for device_type 14, or be left out")
			}
		case req.HWID != "":
			if ev.HWID, aerr = parseEmail("request.hwid", req.HWID); aerr != nil {
				return nil, aerr
			}
			ev.Email = ev.HWID
		default:
			return nil, badField("request.email", "is required for device_type 14")
		}
	case schemas.DeviceIOS, schemas.DeviceAndroid:
		if req.HWID == "" {
			return nil, badField("request.hwid", "is required")
		}
		if hasPrefixFold(req.HWID, prefixWhatsApp) || hasPrefixFold(req.HWID, prefixSMS) {
			return nil, badField("request.hwid", "whatsapp: and sms: ids are for device_type 21 and 18")
		}
		if ev.HWID, _, aerr = canonicalHWID("request.hwid", req.HWID); aerr != nil {
			return nil, aerr
		}
		if req.PushToken == "" {
			return nil, badField("request.push_token", "is required for device_type %d", dt)
		}
		if aerr := checkText("request.push_token", req.PushToken, maxPushToken); aerr != nil {
			return nil, aerr
		}
		ev.PushToken = req.PushToken
	default:
		return nil, badField("request.device_type", "unknown device type %d: want 21 WhatsApp, 18 SMS, 14 email, 1 iOS or 3 Android", dt)
	}
	// A WhatsApp or SMS subscriber's other addresses, so that one profile
	// reaches the user on every channel (an omnichannel journey): an email
	// and the push token of the app on their phone.
	if dt := *req.DeviceType; dt == schemas.DeviceWhatsApp || dt == schemas.DeviceSMS {
		if req.Email != "" {
			if ev.Email, aerr = parseEmail("request.email", req.Email); aerr != nil {
				return nil, aerr
			}
		}
		if req.PushToken != "" {
			if aerr := checkText("request.push_token", req.PushToken, maxPushToken); aerr != nil {
				return nil, aerr
			}
			ev.PushToken = req.PushToken
		}
	}
	if aerr := checkText("request.userId", req.UserID, maxIDLen); aerr != nil {
		return nil, aerr
	}
	ev.UserID = req.UserID
	if aerr := checkLanguage("request.language", req.Language); aerr != nil {
		return nil, aerr
	}
	ev.Language = req.Language
	if aerr := checkText("request.app_version", req.AppVersion, maxAppVersion); aerr != nil {
		return nil, aerr
	}
	ev.AppVersion = req.AppVersion
	if ev.Timezone, aerr = parseTimezone("request.timezone", req.Timezone); aerr != nil {
		return nil, aerr
	}
	tags, aerr := decodeTags("request.tags", req.Tags, req.TagTypes)
	if aerr != nil {
		return nil, aerr
	}
	ev.Tags, ev.TagTypes, ev.TagOps = tags.tags, tags.types, tags.ops
	return ev, nil
}

// buildSetTags is POST /json/1.3/setTags.
func buildSetTags(s *Server, authHeader string, body []byte, now time.Time) (*schemas.Event, *apiError) {
	req, app, aerr := s.begin(authHeader, body)
	if aerr != nil {
		return nil, aerr
	}
	hwid, userID, country, aerr := identify(req)
	if aerr != nil {
		return nil, aerr
	}
	tags, aerr := decodeTags("request.tags", req.Tags, req.TagTypes)
	if aerr != nil {
		return nil, aerr
	}
	if len(tags.tags) == 0 {
		return nil, badField("request.tags", "is required: an object of tag names to values (null removes a tag)")
	}
	return &schemas.Event{
		ID:       newEventID(),
		App:      app.ID,
		Kind:     schemas.KindTags,
		Time:     now,
		Received: now,
		HWID:     hwid,
		UserID:   userID,
		Country:  country,
		Tags:     tags.tags,
		TagTypes: tags.types,
		TagOps:   tags.ops,
	}, nil
}

// reservedEvents are produced by Herald only (the webhook, the
// segmenter): a client posting them would fake inbound messages, statuses,
// segment membership or journey progress.
var reservedEvents = map[string]bool{
	strings.ToLower(schemas.EventWhatsAppReceived): true,
	strings.ToLower(schemas.EventWhatsAppStatus):   true,
	strings.ToLower(schemas.EventSegmentEntered):   true,
	strings.ToLower(schemas.EventSegmentExited):    true,
	strings.ToLower(schemas.EventJourneyEntered):   true,
	strings.ToLower(schemas.EventJourneyStep):      true,
	strings.ToLower(schemas.EventJourneyExited):    true,
	// Email feedback comes from ingest's signed tracking links only.
	strings.ToLower(schemas.EventEmailOpened):       true,
	strings.ToLower(schemas.EventEmailClicked):      true,
	strings.ToLower(schemas.EventEmailUnsubscribed): true,
}

// buildPostEvent is POST /json/1.3/postEvent.
func buildPostEvent(s *Server, authHeader string, body []byte, now time.Time) (*schemas.Event, *apiError) {
	req, app, aerr := s.begin(authHeader, body)
	if aerr != nil {
		return nil, aerr
	}
	hwid, userID, country, aerr := identify(req)
	if aerr != nil {
		return nil, aerr
	}
	if req.Event == "" {
		return nil, badField("request.event", "is required: the event name")
	}
	if aerr := checkText("request.event", req.Event, maxNameLen); aerr != nil {
		return nil, aerr
	}
	if reservedEvents[strings.ToLower(req.Event)] {
		return nil, badField("request.event", "%s is reserved for events Herald produces itself", quote(req.Event))
	}
	attrs, aerr := decodeValues("request.attributes", req.Attributes, attributeRules)
	if aerr != nil {
		return nil, aerr
	}
	at, aerr := parseTimestamp("request.timestampUTC", req.TimestampUTC, now)
	if aerr != nil {
		return nil, aerr
	}
	return &schemas.Event{
		ID:         newEventID(),
		App:        app.ID,
		Kind:       schemas.KindEvent,
		Name:       req.Event,
		Time:       at,
		Received:   now,
		HWID:       hwid,
		UserID:     userID,
		Country:    country,
		Attributes: attrs,
	}, nil
}

// buildUnregister is POST /json/1.3/unregisterDevice: the device stops
// receiving; its profile stays for analytics.
func buildUnregister(s *Server, authHeader string, body []byte, now time.Time) (*schemas.Event, *apiError) {
	req, app, aerr := s.begin(authHeader, body)
	if aerr != nil {
		return nil, aerr
	}
	if req.HWID == "" {
		return nil, badField("request.hwid", "is required: the device to unregister")
	}
	hwid, country, aerr := canonicalHWID("request.hwid", req.HWID)
	if aerr != nil {
		return nil, aerr
	}
	return &schemas.Event{
		ID:       newEventID(),
		App:      app.ID,
		Kind:     schemas.KindUnregister,
		Name:     schemas.EventDeviceUnregistered,
		Time:     now,
		Received: now,
		HWID:     hwid,
		Country:  country,
	}, nil
}

// buildRegisterUser is POST /json/1.3/registerUser: binds a user id to a
// device (hwid optional: without it the user id alone is known).
func buildRegisterUser(s *Server, authHeader string, body []byte, now time.Time) (*schemas.Event, *apiError) {
	req, app, aerr := s.begin(authHeader, body)
	if aerr != nil {
		return nil, aerr
	}
	if req.UserID == "" {
		return nil, badField("request.userId", "is required: the user id to register")
	}
	hwid, userID, country, aerr := identify(req)
	if aerr != nil {
		return nil, aerr
	}
	ev := &schemas.Event{
		ID:       newEventID(),
		App:      app.ID,
		Kind:     schemas.KindEvent,
		Name:     schemas.EventUserRegistered,
		Time:     now,
		Received: now,
		HWID:     hwid,
		UserID:   userID,
		Country:  country,
	}
	if req.DeviceType != nil {
		switch dt := *req.DeviceType; dt {
		case schemas.DeviceWhatsApp, schemas.DeviceSMS, schemas.DeviceEmail, schemas.DeviceIOS, schemas.DeviceAndroid:
			ev.DeviceType = dt
		default:
			return nil, badField("request.device_type", "unknown device type %d: want 21 WhatsApp, 18 SMS, 14 email, 1 iOS or 3 Android", dt)
		}
	}
	return ev, nil
}

// pushwooshRoutes are the Pushwoosh-compatible /json/1.3 routes.
func (s *Server) pushwooshRoutes() map[string]*route {
	return map[string]*route{
		"/json/1.3/registerDevice": {name: routeRegisterDevice, allow: http.MethodPost, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodPost: s.pushwoosh(routeRegisterDevice, buildRegister),
		}},
		"/json/1.3/setTags": {name: routeSetTags, allow: http.MethodPost, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodPost: s.pushwoosh(routeSetTags, buildSetTags),
		}},
		"/json/1.3/postEvent": {name: routePostEvent, allow: http.MethodPost, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodPost: s.pushwoosh(routePostEvent, buildPostEvent),
		}},
		"/json/1.3/unregisterDevice": {name: routeUnregisterDevice, allow: http.MethodPost, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodPost: s.pushwoosh(routeUnregisterDevice, buildUnregister),
		}},
		"/json/1.3/registerUser": {name: routeRegisterUser, allow: http.MethodPost, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodPost: s.pushwoosh(routeRegisterUser, buildRegisterUser),
		}},
		"/json/1.3/createWhatsAppMessage": {name: routeCreateWhatsApp, allow: http.MethodPost, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodPost: s.createWhatsAppMessage,
		}},
		"/json/1.3/getTags": {name: routeGetTags, allow: http.MethodPost, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodPost: s.getTags,
		}},
	}
}

package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// POST /json/1.3/createWhatsAppMessage, as Pushwoosh's WhatsApp API:
//
//	{"request":{"application":"APP","auth":"TOKEN","notifications":[{
//	  "send_date":"now",                       // or "YYYY-MM-DD HH:mm" UTC
//	  "content_id":"order_update",             // a template name, or
//	  "content":"Your order shipped",          // free-form text (24-hour window only)
//	  "devices":["whatsapp:+4915123456789"],   // hwids or E.164 numbers
//	  "content_variables":{"1":"John","2":"#1234"},
//	  "header_variables":{"1":"Spring sale"},
//	  "button_url_variables":{"0":"order/1234"},
//	  "language":"en_US",                      // template language, default en_US
//	  "campaign":"spring-sale"                 // optional: Source.Name in analytics
//	}]}}
//
// Each (notification, device) becomes one schemas.DispatchRequest, sent
// from the app's default WhatsApp number. The answer, after Kafka
// acknowledged every request, is Pushwoosh's {"Messages":["<code>",...]}
// (one code per notification) plus the number of dispatch requests and
// "send_at", one entry per notification: the RFC 3339 time it is scheduled
// for, or null when it is sent now. Dispatch ids are derived from the code
// and the recipient, so a replay of the same decision is recognisable.
//
// send_date "now", absent, in the past or less than scheduleTolerance ahead
// sends now: the requests go to schemas.TopicDispatch (Pushwoosh sends past
// dates at once too). A send_date further ahead, up to
// schemas.MaxScheduleAhead, schedules the send: the requests carry SendAt
// and go to schemas.TopicScheduled, where the dispatcher stage's scheduler
// keeps them, durably, and releases them to TopicDispatch at that time. Their
// Deadline is SendAt plus dispatchValidity, as a request sent now gets now
// plus dispatchValidity. A send_date further ahead is refused.
//
// The call is all-or-nothing: every notification is checked before any
// request is produced. Free-form content is delivered only inside the
// recipient's 24-hour service window at the time of the send (for a
// scheduled one: when it is released); outside it the dispatcher refuses it
// before calling Meta (131047) and reports a failed outcome.

// Limits of createWhatsAppMessage.
const (
	maxNotifications = 100
	maxDevices       = 10000
	maxTextBody      = 4096 // Meta's text.body limit
	maxVariable      = 1024
	maxVariables     = 50
	maxButtons       = 10
	dispatchValidity = 24 * time.Hour
	// scheduleTolerance: a send_date less than this ahead is sent now
	// rather than scheduled (the format has minutes only, and clocks differ).
	scheduleTolerance = time.Minute
)

// templateNameRe is Meta's template name: lowercase letters, digits and
// underscores.
var templateNameRe = regexp.MustCompile(`^[a-z0-9_]{1,512}$`)

type pwMessageRequest struct {
	Application   string            `json:"application"`
	Auth          string            `json:"auth"`
	Notifications []json.RawMessage `json:"notifications"`
}

type pwNotification struct {
	SendDate           json.RawMessage `json:"send_date"`
	Content            json.RawMessage `json:"content"`
	ContentID          json.RawMessage `json:"content_id"`
	Devices            json.RawMessage `json:"devices"`
	ContentVariables   json.RawMessage `json:"content_variables"`
	HeaderVariables    json.RawMessage `json:"header_variables"`
	ButtonURLVariables json.RawMessage `json:"button_url_variables"`
	Language           string          `json:"language"`
	Campaign           string          `json:"campaign"`
	PreviewURL         bool            `json:"preview_url"`
}

// createWhatsAppMessage serves the route.
func (s *Server) createWhatsAppMessage(w *statusWriter, r *http.Request) {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	reqs, codes, sendAt, aerr := s.buildWhatsAppMessages(r.Header.Get("Authorization"), body, time.Now().UTC())
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	for _, d := range reqs {
		if err := d.Validate(); err != nil { // a bug here, not the caller's fault
			s.log.Error("built an invalid dispatch request", "route", routeCreateWhatsApp, "err", err)
			writeError(w, &apiError{Code: http.StatusInternalServerError, Msg: "internal error"})
			return
		}
	}
	if err := s.produceDispatch(r.Context(), reqs); err != nil {
		writeError(w, s.produceError(routeCreateWhatsApp, err))
		return
	}
	writeOK(w, map[string]any{"Messages": codes, "dispatch_requests": len(reqs), "send_at": sendAt})
}

// buildWhatsAppMessages decodes, authorizes and checks a call and returns
// its dispatch requests, and per notification its message code and the time
// it is scheduled for (nil: sent now).
func (s *Server) buildWhatsAppMessages(authHeader string, body []byte, now time.Time) (_ []*schemas.DispatchRequest, _ []string, _ []*string, aerr *apiError) {
	var env struct {
		Request *pwMessageRequest `json:"request"`
	}
	if aerr = decodeStrict(body, &env); aerr != nil {
		return nil, nil, nil, aerr
	}
	if env.Request == nil {
		return nil, nil, nil, badField("request", `is required: the body is {"request":{...}}`)
	}
	req := env.Request
	app, aerr := s.authorize(authHeader, &pwRequest{Application: req.Application, Auth: req.Auth})
	if aerr != nil {
		return nil, nil, nil, aerr
	}
	switch n := len(req.Notifications); {
	case n == 0:
		return nil, nil, nil, badField("request.notifications", "is required: a list of 1 to %d notifications", maxNotifications)
	case n > maxNotifications:
		return nil, nil, nil, badField("request.notifications", "has %d notifications, at most %d are allowed", n, maxNotifications)
	}
	sender := app.Sender()
	if sender == "" {
		return nil, nil, nil, badField("request.application", "%s has no WhatsApp phone number id configured to send from", quote(app.ID))
	}
	var (
		out    []*schemas.DispatchRequest
		codes  = make([]string, 0, len(req.Notifications))
		sendAt = make([]*string, 0, len(req.Notifications))
	)
	for i, raw := range req.Notifications {
		prefix := fmt.Sprintf("request.notifications[%d]", i)
		code := newEventID()
		reqs, at, aerr := whatsAppNotification(app, sender, prefix, raw, code, now)
		if aerr != nil {
			return nil, nil, nil, aerr
		}
		out = append(out, reqs...)
		codes = append(codes, code)
		if at.IsZero() {
			sendAt = append(sendAt, nil)
		} else {
			v := at.Format(time.RFC3339)
			sendAt = append(sendAt, &v)
		}
	}
	return out, codes, sendAt, nil
}

// whatsAppNotification checks one notification and makes its requests; at
// is when they are scheduled for, zero when they are sent now.
func whatsAppNotification(app *apps.App, sender, prefix string, raw json.RawMessage, code string, now time.Time) (_ []*schemas.DispatchRequest, at time.Time, _ *apiError) {
	var n pwNotification
	if err := json.Unmarshal(raw, &n); err != nil {
		aerr := jsonError(err)
		if aerr.Field == "body" {
			aerr.Field = prefix
		} else {
			aerr.Field = prefix + "." + aerr.Field
		}
		return nil, at, aerr
	}
	at, aerr := checkSendDate(prefix+".send_date", n.SendDate, now)
	if aerr != nil {
		return nil, at, aerr
	}
	content, aerr := messageText(prefix+".content", n.Content)
	if aerr != nil {
		return nil, at, aerr
	}
	tplName, aerr := segString(prefix+".content_id", n.ContentID, 512)
	if aerr != nil {
		return nil, at, aerr
	}
	var (
		tpl  *schemas.Template
		text *schemas.Text
	)
	switch {
	case content != "" && tplName != "":
		return nil, at, badField(prefix+".content", "give content (free-form text) or content_id (a template), not both")
	case tplName != "":
		if !templateNameRe.MatchString(tplName) {
			return nil, at, badField(prefix+".content_id", "%s is not a template name: lowercase letters, digits and underscores", quote(tplName))
		}
		lang := n.Language
		if lang == "" {
			lang = "en_US"
		}
		if aerr := checkLanguage(prefix+".language", lang); aerr != nil {
			return nil, at, aerr
		}
		tpl = &schemas.Template{Name: tplName, Language: lang}
		if tpl.Body, aerr = numberedVariables(prefix+".content_variables", n.ContentVariables); aerr != nil {
			return nil, at, aerr
		}
		if tpl.Header, aerr = numberedVariables(prefix+".header_variables", n.HeaderVariables); aerr != nil {
			return nil, at, aerr
		}
		if tpl.ButtonURL, aerr = buttonVariables(prefix+".button_url_variables", n.ButtonURLVariables); aerr != nil {
			return nil, at, aerr
		}
	case content != "":
		for _, f := range []struct {
			name string
			raw  json.RawMessage
		}{{"content_variables", n.ContentVariables}, {"header_variables", n.HeaderVariables}, {"button_url_variables", n.ButtonURLVariables}} {
			if !isNull(f.raw) {
				return nil, at, badField(prefix+"."+f.name, "is for templates (content_id); free-form content has no variables")
			}
		}
		text = &schemas.Text{Body: content, PreviewURL: n.PreviewURL}
	default:
		return nil, at, badField(prefix+".content_id", "content_id (a template name) or content (free-form text) is required")
	}
	if aerr := checkText(prefix+".campaign", n.Campaign, maxNameLen); aerr != nil {
		return nil, at, aerr
	}
	devices, aerr := messageDevices(prefix+".devices", n.Devices)
	if aerr != nil {
		return nil, at, aerr
	}
	source := schemas.Source{Kind: "api", Name: n.Campaign}
	if source.Name == "" {
		source.Name = "createWhatsAppMessage"
	}
	// A scheduled request is valid for as long after its send time as one
	// sent now is after now.
	deadline := now.Add(dispatchValidity)
	if !at.IsZero() {
		deadline = at.Add(dispatchValidity)
	}
	out := make([]*schemas.DispatchRequest, 0, len(devices))
	for _, d := range devices {
		sum := sha256.Sum256([]byte(app.ID + "|" + code + "|" + d.to))
		out = append(out, &schemas.DispatchRequest{
			ID:       hex.EncodeToString(sum[:16]),
			App:      app.ID,
			Channel:  schemas.ChannelWhatsApp,
			Sender:   sender,
			To:       d.to,
			HWID:     prefixWhatsApp + d.to,
			Country:  d.country,
			Template: tpl,
			Text:     text,
			Source:   source,
			Created:  now,
			Deadline: deadline,
			SendAt:   at,
		})
	}
	return out, at, nil
}

// messageText reads free-form content: valid UTF-8, at most Meta's 4,096
// bytes, line breaks and tabs allowed, other control characters not.
func messageText(field string, raw json.RawMessage) (string, *apiError) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badField(field, "must be a string")
	}
	if len(s) > maxTextBody {
		return "", badField(field, "is %d bytes long, WhatsApp takes at most %d", len(s), maxTextBody)
	}
	if !utf8.ValidString(s) {
		return "", badField(field, "is not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return "", badField(field, "contains control characters other than line breaks and tabs")
		}
	}
	return s, nil
}

// checkSendDate takes "now", nothing, or a "YYYY-MM-DD HH:mm" UTC time at
// most schemas.MaxScheduleAhead ahead. It returns the time to send at, zero
// for now (also for a time in the past or less than scheduleTolerance ahead).
func checkSendDate(field string, raw json.RawMessage, now time.Time) (time.Time, *apiError) {
	v, aerr := segString(field, raw, 64)
	if aerr != nil || v == "" || v == "now" {
		return time.Time{}, aerr
	}
	t, err := time.Parse(pwDateLayout, v)
	if err != nil {
		return time.Time{}, badField(field, `%s: want "now" or "YYYY-MM-DD HH:mm" (UTC)`, quote(v))
	}
	switch {
	case t.After(now.Add(schemas.MaxScheduleAhead)):
		return time.Time{}, badField(field, "%s is more than %d days ahead: sends can be scheduled at most %d days in advance",
			quote(v), schemas.MaxScheduleAhead/(24*time.Hour), schemas.MaxScheduleAhead/(24*time.Hour))
	case t.After(now.Add(scheduleTolerance)):
		return t.UTC(), nil
	}
	return time.Time{}, nil
}

// recipient is a device of a notification.
type recipient struct{ to, country string }

// messageDevices reads the devices list: "whatsapp:+E164" hwids or bare
// E.164 numbers, duplicates collapsed.
func messageDevices(field string, raw json.RawMessage) ([]recipient, *apiError) {
	if isNull(raw) {
		return nil, badField(field, "is required: a list of WhatsApp hwids (whatsapp:+E164) or E.164 numbers")
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badField(field, "must be a list of strings")
	}
	switch {
	case len(list) == 0:
		return nil, badField(field, "is empty: give 1 to %d devices", maxDevices)
	case len(list) > maxDevices:
		return nil, badField(field, "has %d devices, at most %d are allowed in one notification", len(list), maxDevices)
	}
	seen := make(map[string]bool, len(list))
	out := make([]recipient, 0, len(list))
	for i, d := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		number := d
		if hasPrefixFold(d, prefixWhatsApp) {
			number = d[len(prefixWhatsApp):]
		} else if hasPrefixFold(d, prefixSMS) || !bytes.HasPrefix([]byte(d), []byte("+")) {
			return nil, badField(f, "%s is not a WhatsApp device: want whatsapp:+<E.164 number> or +<E.164 number>", quote(d))
		}
		e164, country, aerr := parsePhone(f, number)
		if aerr != nil {
			return nil, aerr
		}
		if seen[e164] {
			continue
		}
		seen[e164] = true
		out = append(out, recipient{to: e164, country: country})
	}
	return out, nil
}

// numberedVariables reads {"1":"John","2":"#1234"} (or a list) into the
// parameters {{1}}, {{2}}, ... in order; the numbers must run from 1
// without gaps.
func numberedVariables(field string, raw json.RawMessage) ([]string, *apiError) {
	vars, aerr := variables(field, raw, 1)
	if aerr != nil || len(vars) == 0 {
		return nil, aerr
	}
	out := make([]string, len(vars))
	for i := range out {
		v, ok := vars[i+1]
		if !ok {
			return nil, badField(field, "has no variable %d: variables are numbered from 1 without gaps", i+1)
		}
		out[i] = v
	}
	return out, nil
}

// buttonVariables reads URL-button suffixes by button index (0 to 9).
func buttonVariables(field string, raw json.RawMessage) (map[int]string, *apiError) {
	vars, aerr := variables(field, raw, 0)
	if aerr != nil || len(vars) == 0 {
		return nil, aerr
	}
	for k := range vars {
		if k >= maxButtons {
			return nil, badField(field+"."+strconv.Itoa(k), "is not a button index: templates have buttons 0 to %d", maxButtons-1)
		}
	}
	return vars, nil
}

// variables reads an object of numbered string values (numbers are taken
// as their text), or a list numbered from base.
func variables(field string, raw json.RawMessage, base int) (map[int]string, *apiError) {
	if isNull(raw) {
		return nil, nil
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		var list []any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if dec.Decode(&list) != nil {
			return nil, badField(field, `must be an object of numbered values, e.g. {"1":"John"}`)
		}
		obj = make(map[string]any, len(list))
		for i, v := range list {
			obj[strconv.Itoa(i+base)] = v
		}
	}
	if len(obj) > maxVariables {
		return nil, badField(field, "has %d variables, at most %d are allowed", len(obj), maxVariables)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[int]string, len(obj))
	for _, k := range keys {
		f := field + "." + k
		n, err := strconv.Atoi(k)
		if err != nil || n < base || n > maxVariables || strconv.Itoa(n) != k {
			return nil, badField(f, "is not a variable number (%d to %d)", base, maxVariables)
		}
		var v string
		switch x := obj[k].(type) {
		case string:
			v = x
		case json.Number:
			v = string(x)
		default:
			return nil, badField(f, "must be a string")
		}
		if v == "" {
			return nil, badField(f, "is empty: Meta refuses empty parameters")
		}
		if aerr := checkText(f, v, maxVariable); aerr != nil {
			return nil, aerr
		}
		out[n] = v
	}
	return out, nil
}

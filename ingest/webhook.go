package ingest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// Meta's webhook, as described by the WhatsApp Cloud API OpenAPI
// (path /whatsapp/webhooks, schemas WebhookPayload, Entry, Change,
// IncomingMessageValueGeneral, StatusMessageValue):
// https://developers.facebook.com/docs/graph-api/webhooks/getting-started
// https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components

const (
	signatureHeader = "X-Hub-Signature-256"
	// wabaObject is WebhookPayload.object for WhatsApp.
	wabaObject = "whatsapp_business_account"
	// fieldMessages is Change.field of messages and statuses.
	fieldMessages = "messages"
	maxChallenge  = 256
)

// Template change fields: their entry.id is the WABA id and their value
// has no metadata (https://developers.facebook.com/docs/graph-api/webhooks/reference/whatsapp-business-account/).
var templateFields = map[string]bool{
	"message_template_status_update":  true,
	"message_template_quality_update": true,
	"template_category_update":        true,
}

// Reasons of herald_ingest_webhook_skipped_total.
const (
	skipObject    = "object"          // WebhookPayload.object is not whatsapp_business_account
	skipField     = "field"           // Change.field is not messages (group updates, account updates, ...)
	skipMalformed = "malformed_value" // Change.value has no usable metadata.phone_number_id
)

// webhookVerify answers Meta's subscription check
// (GET ?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...): the
// challenge is echoed when the token is some app's verify token.
func (s *Server) webhookVerify(w *statusWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("hub.mode") != "subscribe" {
		writeError(w, &apiError{Code: http.StatusForbidden, Field: "hub.mode", Msg: `must be "subscribe"`})
		return
	}
	app, ok := s.reg.ByVerifyToken(q.Get("hub.verify_token"))
	if !ok {
		writeError(w, &apiError{Code: http.StatusForbidden, Field: "hub.verify_token", Msg: "does not match the verify token of any app"})
		return
	}
	ch := q.Get("hub.challenge")
	if ch == "" || len(ch) > maxChallenge {
		writeError(w, badField("hub.challenge", "must be 1 to %d characters", maxChallenge))
		return
	}
	s.log.Info("webhook verified by meta", "app", app)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(ch))
}

// webhookPost takes Meta's signed deliveries. 200 only after Kafka
// acknowledged every record; Meta retries anything else for days, and the
// retry produces the same event ids.
func (s *Server) webhookPost(w *statusWriter, r *http.Request) {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	secret, aerr := s.verifySignature(r.Header.Get(signatureHeader), body)
	if aerr != nil {
		s.m.sigFailures.Inc()
		if ok, n := s.logSignature.allow(); ok {
			s.log.Warn("webhook refused: bad signature", "remote", r.RemoteAddr, "reason", aerr.Msg, "suppressed", n)
		}
		writeError(w, aerr)
		return
	}
	b, aerr := s.parseWebhook(body, secret, time.Now().UTC())
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	events, keys := s.fresh(apiWebhook, b.events, func(e *schemas.Event) string { return e.App + "|" + e.ID })
	if err := s.produce(r.Context(), events, b.dead); err != nil {
		writeError(w, s.produceError(routeWebhook, err))
		return
	}
	s.remember(keys)
	writeOK(w, map[string]int{"events": len(events), "dead_letters": len(b.dead), "duplicates": len(b.events) - len(events)})
}

// verifySignature checks X-Hub-Signature-256 ("sha256=" and the hex
// HMAC-SHA256 of the raw body keyed with the Meta app secret) against every
// configured app secret, in constant time, and returns the secret that
// signed the body.
func (s *Server) verifySignature(header string, body []byte) (string, *apiError) {
	refuse := func(msg string) (string, *apiError) {
		return "", &apiError{Code: http.StatusUnauthorized, Field: signatureHeader, Msg: msg}
	}
	if header == "" {
		return refuse("is required: sha256=<hex HMAC-SHA256 of the body keyed with the Meta app secret>")
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return refuse(`must start with "sha256="`)
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil || len(sig) != sha256.Size {
		return refuse("must be sha256= and 64 hex digits")
	}
	var signer string
	for _, sec := range s.secrets { // no early exit: the time says nothing about which secret matched
		mac := hmac.New(sha256.New, []byte(sec))
		mac.Write(body)
		if hmac.Equal(mac.Sum(nil), sig) && signer == "" {
			signer = sec
		}
	}
	if signer == "" {
		return refuse("does not match the body signed with the app secret of any app")
	}
	return signer, nil
}

// Meta's payload, the parts Herald uses. Item-level parts stay raw so that
// one odd message or status is dead-lettered without failing the delivery.
type (
	waPayload struct {
		Object string    `json:"object"`
		Entry  []waEntry `json:"entry"`
	}
	waEntry struct {
		ID      string          `json:"id"`
		Time    json.RawMessage `json:"time"`
		Changes []waChange      `json:"changes"`
	}
	// waTemplate is the value of the template change fields.
	waTemplate struct {
		Event                   string      `json:"event"`
		MessageTemplateID       json.Number `json:"message_template_id"`
		MessageTemplateName     string      `json:"message_template_name"`
		MessageTemplateLanguage string      `json:"message_template_language"`
		Reason                  string      `json:"reason"`
		NewQualityScore         string      `json:"new_quality_score"`
		NewCategory             string      `json:"new_category"`
	}
	waChange struct {
		Field string          `json:"field"`
		Value json.RawMessage `json:"value"`
	}
	waValue struct {
		Metadata struct {
			PhoneNumberID string `json:"phone_number_id"`
		} `json:"metadata"`
		Contacts []json.RawMessage `json:"contacts"`
		Messages []json.RawMessage `json:"messages"`
		Statuses []json.RawMessage `json:"statuses"`
	}
	waContact struct {
		Profile struct {
			Name string `json:"name"`
		} `json:"profile"`
		WaID string `json:"wa_id"`
	}
	waMessage struct {
		From        string                          `json:"from"`
		ID          string                          `json:"id"`
		Timestamp   json.RawMessage                 `json:"timestamp"`
		Type        string                          `json:"type"`
		Context     *struct{ ID string }            `json:"context"`
		Text        *struct{ Body string }          `json:"text"`
		Button      *struct{ Payload, Text string } `json:"button"`
		Interactive *struct {
			Type        string                                   `json:"type"`
			ButtonReply *struct{ ID, Title string }              `json:"button_reply"`
			ListReply   *struct{ ID, Title, Description string } `json:"list_reply"`
		} `json:"interactive"`
		Reaction *struct {
			MessageID string `json:"message_id"`
			Emoji     string `json:"emoji"`
		} `json:"reaction"`
		Image    *waMedia `json:"image"`
		Video    *waMedia `json:"video"`
		Audio    *waMedia `json:"audio"`
		Document *waMedia `json:"document"`
		Sticker  *waMedia `json:"sticker"`
		Location *struct {
			Latitude  any    `json:"latitude"`
			Longitude any    `json:"longitude"`
			Name      string `json:"name"`
			Address   string `json:"address"`
			URL       string `json:"url"`
		} `json:"location"`
		Contacts []struct {
			Name struct {
				FormattedName string `json:"formatted_name"`
			} `json:"name"`
			Phones []struct {
				Phone string `json:"phone"`
			} `json:"phones"`
		} `json:"contacts"`
		System *struct {
			Body string `json:"body"`
			WaID string `json:"wa_id"`
			Type string `json:"type"`
		} `json:"system"`
		Referral *struct {
			SourceID   string `json:"source_id"`
			SourceType string `json:"source_type"`
			CtwaClid   string `json:"ctwa_clid"`
		} `json:"referral"`
		Errors []waError `json:"errors"`
	}
	waMedia struct {
		ID       string `json:"id"`
		MimeType string `json:"mime_type"`
		SHA256   string `json:"sha256"`
		Caption  string `json:"caption"`
		Filename string `json:"filename"`
	}
	waStatus struct {
		ID                    string          `json:"id"`
		Status                string          `json:"status"`
		Timestamp             json.RawMessage `json:"timestamp"`
		RecipientID           string          `json:"recipient_id"`
		BizOpaqueCallbackData string          `json:"biz_opaque_callback_data"`
		Pricing               *struct {
			Billable     bool   `json:"billable"`
			Category     string `json:"category"`
			PricingModel string `json:"pricing_model"`
			Type         string `json:"type"`
		} `json:"pricing"`
		Conversation *struct {
			ID     string `json:"id"`
			Origin struct {
				Type string `json:"type"`
			} `json:"origin"`
		} `json:"conversation"`
		Errors []waError `json:"errors"`
	}
	waError struct {
		Code      int    `json:"code"`
		Title     string `json:"title"`
		Message   string `json:"message"`
		ErrorData struct {
			Details string `json:"details"`
		} `json:"error_data"`
	}
)

// webhookBatch is what one delivery becomes.
type webhookBatch struct {
	events []*schemas.Event
	dead   []*schemas.DeadLetter
}

// parseWebhook turns a delivery signed with secret into events. Only
// changes whose metadata.phone_number_id belongs to an app with that secret
// are taken; others are counted as foreign and skipped. Messages and
// statuses that cannot be understood become dead letters. The error is a
// 400 for a body that is not Meta's JSON shape at all.
func (s *Server) parseWebhook(body []byte, secret string, now time.Time) (*webhookBatch, *apiError) {
	var p waPayload
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&p); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, badField("body", "has data after the JSON object")
	}
	b := new(webhookBatch)
	if p.Object != wabaObject {
		s.skip(skipObject, "webhook object is not "+wabaObject, "object", quote(p.Object))
		return b, nil
	}
	for ei, e := range p.Entry {
		for ci, c := range e.Changes {
			where := fmt.Sprintf("entry[%d].changes[%d]", ei, ci)
			if templateFields[c.Field] {
				s.templateChange(b, e, c, where, secret, now)
				continue
			}
			if c.Field != fieldMessages {
				s.skip(skipField, "webhook change field is not messages", "where", where, "field", quote(c.Field))
				continue
			}
			var v waValue
			if err := json.Unmarshal(c.Value, &v); err != nil || v.Metadata.PhoneNumberID == "" {
				s.skip(skipMalformed, "webhook change value has no usable metadata.phone_number_id", "where", where, "entry_id", quote(e.ID))
				continue
			}
			pnid := v.Metadata.PhoneNumberID
			app, ok := s.reg.ByPhoneNumberID(pnid)
			if !ok || subtle.ConstantTimeCompare([]byte(app.WhatsApp.AppSecret), []byte(secret)) != 1 {
				s.foreignChange(where, "phone_number_id", pnid, app)
				continue
			}
			names := contactNames(v.Contacts)
			for i, raw := range v.Messages {
				ev, err := inboundEvent(app, pnid, raw, names, now)
				if err != nil {
					b.dead = append(b.dead, deadLetter(app, raw, fmt.Sprintf("webhook %s.value.messages[%d]: %v", where, i, err), now))
					continue
				}
				b.events = append(b.events, ev)
			}
			for i, raw := range v.Statuses {
				ev, err := statusEvent(app, pnid, raw, now)
				if err != nil {
					b.dead = append(b.dead, deadLetter(app, raw, fmt.Sprintf("webhook %s.value.statuses[%d]: %v", where, i, err), now))
					continue
				}
				b.events = append(b.events, ev)
			}
		}
	}
	return b, nil
}

// templateChange maps a template status, quality or category change. The
// entry id is the WABA id; the change is taken only when the app owning
// that account has the secret that signed the delivery.
func (s *Server) templateChange(b *webhookBatch, e waEntry, c waChange, where, secret string, now time.Time) {
	app, ok := s.reg.ByWABAID(e.ID)
	if !ok || subtle.ConstantTimeCompare([]byte(app.WhatsApp.AppSecret), []byte(secret)) != 1 {
		s.foreignChange(where, "waba_id", e.ID, app)
		return
	}
	var v waTemplate
	if err := json.Unmarshal(c.Value, &v); err != nil {
		b.dead = append(b.dead, deadLetter(app, c.Value, fmt.Sprintf("webhook %s.value: decoding: %v", where, err), now))
		return
	}
	t := &schemas.TemplateUpdate{
		Field:      c.Field,
		WABAID:     e.ID,
		TemplateID: v.MessageTemplateID.String(),
		Name:       v.MessageTemplateName,
		Language:   v.MessageTemplateLanguage,
		Event:      v.Event,
		Reason:     v.Reason,
		Quality:    v.NewQualityScore,
		Category:   v.NewCategory,
	}
	if t.Name == "" && t.TemplateID == "" {
		b.dead = append(b.dead, deadLetter(app, c.Value, fmt.Sprintf("webhook %s.value: message_template_name or message_template_id is required", where), now))
		return
	}
	at, err := parseUnix(e.Time)
	if err != nil || at.IsZero() {
		at = now
	}
	b.events = append(b.events, &schemas.Event{
		// Meta sends one change per transition: the transition and its
		// time identify it, so a retried delivery gets the same id.
		ID:       webhookEventID("tpl", c.Field, e.ID, t.TemplateID, t.Name, t.Language, t.Event, t.Quality, t.Category, string(e.Time)),
		App:      app.ID,
		Kind:     schemas.KindTemplate,
		Time:     at,
		Received: now,
		Template: t,
	})
}

// foreignChange counts and logs (throttled) a change skipped because the
// number or account it names is unknown or owned by an app of another
// secret.
func (s *Server) foreignChange(where, what, id string, owner *apps.App) {
	s.m.foreign.Inc()
	if ok, n := s.logForeign.allow(); ok {
		o := "none"
		if owner != nil {
			o = owner.ID
		}
		s.log.Warn("webhook change skipped: its "+what+" is not owned by an app of the signing secret",
			"where", where, what, id, "owner", o, "suppressed", n)
	}
}

// skip counts and logs (throttled) a part of a delivery ignored on purpose.
func (s *Server) skip(reason, msg string, kv ...any) {
	s.m.skipped.WithLabelValues(reason).Inc()
	if ok, n := s.logSkipped.allow(); ok {
		s.log.Info(msg, append(kv, "suppressed", n)...)
	}
}

// contactNames maps wa_id to profile name.
func contactNames(raws []json.RawMessage) map[string]string {
	names := make(map[string]string, len(raws))
	for _, raw := range raws {
		var c waContact
		if json.Unmarshal(raw, &c) == nil && c.WaID != "" {
			names[c.WaID] = c.Profile.Name
		}
	}
	return names
}

// webhookEventID is deterministic, so that Meta's retries of a delivery
// produce the same ids and consumers deduplicate them: the first 128 bits
// of SHA-256 over the kind and Meta's ids, hex.
func webhookEventID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "|")))
	return hex.EncodeToString(sum[:16])
}

var (
	errNoID     = errors.New("id is required")
	errNoStatus = errors.New("status is required")
)

// inboundEvent maps one value.messages[] item.
func inboundEvent(app *apps.App, pnid string, raw json.RawMessage, names map[string]string, now time.Time) (*schemas.Event, error) {
	var m waMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if m.ID == "" {
		return nil, errNoID
	}
	from, country, ok := waNumber(m.From)
	if !ok {
		return nil, fmt.Errorf("from %s is not a WhatsApp id (digits of the phone number)", quote(m.From))
	}
	at, err := parseUnix(m.Timestamp)
	if err != nil {
		return nil, err
	}
	if at.IsZero() {
		at = now
	}
	in := &schemas.Inbound{
		PhoneNumberID: pnid,
		From:          from,
		WAMID:         m.ID,
		Type:          m.Type,
		ProfileName:   names[m.From],
	}
	if in.ProfileName == "" && len(names) == 1 {
		// Meta: "a WhatsApp user's ID and phone number may not always
		// match"; a lone contact is the sender's.
		for _, n := range names {
			in.ProfileName = n
		}
	}
	if in.Type == "" {
		in.Type = "unknown"
	}
	if m.Context != nil {
		in.ContextID = m.Context.ID
	}
	attrs := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			attrs[k] = v
		}
	}
	switch {
	case m.Text != nil:
		in.Text = m.Text.Body
	case m.Button != nil:
		in.Payload = m.Button.Payload
		in.Text = m.Button.Payload
		if in.Text == "" {
			in.Text = m.Button.Text
		}
		set("button_payload", m.Button.Payload)
		set("button_text", m.Button.Text)
	case m.Interactive != nil:
		set("interactive_type", m.Interactive.Type)
		if r := m.Interactive.ButtonReply; r != nil {
			in.Text, in.Payload = r.Title, r.ID
			set("reply_id", r.ID)
			set("reply_title", r.Title)
		}
		if r := m.Interactive.ListReply; r != nil {
			in.Text, in.Payload = r.Title, r.ID
			set("reply_id", r.ID)
			set("reply_title", r.Title)
			set("reply_description", r.Description)
		}
	case m.Reaction != nil:
		in.Reaction = &schemas.Reaction{MessageID: m.Reaction.MessageID, Emoji: m.Reaction.Emoji}
		set("reaction_message_id", m.Reaction.MessageID)
		set("emoji", m.Reaction.Emoji)
	case m.Location != nil:
		in.Location = &schemas.Location{Name: m.Location.Name, Address: m.Location.Address, URL: m.Location.URL}
		if f, ok := coordinate(m.Location.Latitude, 90); ok {
			attrs["latitude"], in.Location.Latitude = f, f
		}
		if f, ok := coordinate(m.Location.Longitude, 180); ok {
			attrs["longitude"], in.Location.Longitude = f, f
		}
		set("location_name", m.Location.Name)
		set("location_address", m.Location.Address)
	case m.System != nil:
		set("system_type", m.System.Type)
		set("system_body", m.System.Body)
		set("new_wa_id", m.System.WaID)
	}
	for _, c := range m.Contacts {
		ct := schemas.Contact{Name: c.Name.FormattedName}
		for _, p := range c.Phones {
			if p.Phone != "" {
				ct.Phones = append(ct.Phones, p.Phone)
			}
		}
		in.Contacts = append(in.Contacts, ct)
	}
	for _, md := range []*waMedia{m.Image, m.Video, m.Audio, m.Document, m.Sticker} {
		if md != nil {
			// The caption is the text a keyword can match.
			in.Text = md.Caption
			in.Media = &schemas.Media{ID: md.ID, MimeType: md.MimeType, SHA256: md.SHA256, Caption: md.Caption, Filename: md.Filename}
			set("media_id", md.ID)
			set("mime_type", md.MimeType)
			set("filename", md.Filename)
			break
		}
	}
	if r := m.Referral; r != nil {
		set("referral_source_id", r.SourceID)
		set("referral_source_type", r.SourceType)
		set("ctwa_clid", r.CtwaClid)
	}
	if len(m.Errors) > 0 {
		in.ErrorCode, in.ErrorTitle = m.Errors[0].Code, m.Errors[0].Title
		attrs["error_code"] = m.Errors[0].Code
		set("error_title", m.Errors[0].Title)
	}
	if len(attrs) == 0 {
		attrs = nil
	}
	return &schemas.Event{
		ID:         webhookEventID("in", m.ID),
		App:        app.ID,
		Kind:       schemas.KindInbound,
		Name:       schemas.EventWhatsAppReceived,
		Time:       at,
		Received:   now,
		HWID:       prefixWhatsApp + from,
		DeviceType: schemas.DeviceWhatsApp,
		Country:    country,
		Attributes: attrs,
		Inbound:    in,
	}, nil
}

// statusEvent maps one value.statuses[] item.
func statusEvent(app *apps.App, pnid string, raw json.RawMessage, now time.Time) (*schemas.Event, error) {
	var st waStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	switch {
	case st.ID == "":
		return nil, errNoID
	case st.Status == "":
		return nil, errNoStatus
	}
	to, country, ok := waNumber(st.RecipientID)
	if !ok {
		return nil, fmt.Errorf("recipient_id %s is not a WhatsApp id (digits of the phone number)", quote(st.RecipientID))
	}
	at, err := parseUnix(st.Timestamp)
	if err != nil {
		return nil, err
	}
	if at.IsZero() {
		at = now
	}
	out := &schemas.Status{
		PhoneNumberID: pnid,
		WAMID:         st.ID,
		Status:        st.Status,
		Recipient:     to,
		DispatchID:    st.BizOpaqueCallbackData,
	}
	if p := st.Pricing; p != nil {
		out.PricingCategory, out.Billable, out.PricingModel, out.PricingType = p.Category, p.Billable, p.PricingModel, p.Type
	}
	if c := st.Conversation; c != nil {
		out.ConversationID, out.ConversationOrigin = c.ID, c.Origin.Type
	}
	if len(st.Errors) > 0 {
		e := st.Errors[0]
		out.ErrorCode, out.ErrorTitle, out.ErrorMessage, out.ErrorDetails = e.Code, e.Title, e.Message, e.ErrorData.Details
	}
	return &schemas.Event{
		ID:         webhookEventID("st", st.ID, st.Status),
		App:        app.ID,
		Kind:       schemas.KindStatus,
		Name:       schemas.EventWhatsAppStatus,
		Time:       at,
		Received:   now,
		HWID:       prefixWhatsApp + to,
		DeviceType: schemas.DeviceWhatsApp,
		Country:    country,
		Status:     out,
	}, nil
}

// coordinate is a latitude (limit 90) or longitude (limit 180) sent as a
// number or a numeric string.
func coordinate(v any, limit float64) (float64, bool) {
	var f float64
	switch v := v.(type) {
	case float64:
		f = v
	case string:
		var err error
		if f, err = strconv.ParseFloat(v, 64); err != nil {
			return 0, false
		}
	default:
		return 0, false
	}
	if math.IsNaN(f) || f < -limit || f > limit {
		return 0, false
	}
	return f, true
}

// deadLetter keeps a webhook item Herald could not map, whole, with the
// reason. It never was a Kafka record: Topic is where it was headed,
// Partition and Offset are -1.
func deadLetter(app *apps.App, raw json.RawMessage, reason string, now time.Time) *schemas.DeadLetter {
	return &schemas.DeadLetter{
		Stage:     "ingest",
		Topic:     schemas.TopicEvents,
		Partition: -1,
		Offset:    -1,
		Key:       []byte(app.ID),
		Value:     append([]byte(nil), raw...),
		Reason:    reason,
		Time:      now,
	}
}

// webhookRoutes are Meta's webhook routes.
func (s *Server) webhookRoutes() map[string]*route {
	return map[string]*route{
		"/whatsapp/webhooks": {name: routeWebhook, allow: "GET, POST", methods: map[string]func(*statusWriter, *http.Request){
			http.MethodGet:  s.webhookVerify,
			http.MethodPost: s.webhookPost,
		}},
	}
}

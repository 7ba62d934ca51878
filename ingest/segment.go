package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// The Segment spec HTTP tracking API, as CDPs (Segment, RudderStack, Jitsu)
// forward it: https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/
//
//	POST /v1/track     an action          -> KindEvent, Name = event, Attributes = properties
//	POST /v1/identify  who the user is    -> KindTags, Tags = traits
//	POST /v1/page      a web page view    -> KindEvent, Name = PW_PageView, Attributes = properties + name, category
//	POST /v1/screen    an app screen view -> KindEvent, Name = PW_ScreenOpen, Attributes = properties + name, category
//	POST /v1/group     user joins a group -> KindEvent, Name = PW_Group, Attributes = traits + group_id
//	POST /v1/alias     two ids, one user  -> KindAlias, PreviousID = previousId (the segmenter merges the two profiles)
//	POST /v1/batch     up to 2,500 of the above, with a shared context
//
// Authentication is the source's write key, as the Basic auth user name
// (password empty) or "writeKey" in the body. Every message needs userId or
// anonymousId. Nested properties and traits are flattened with dots
// ({"address":{"city":"Berlin"}} is "address.city") up to four levels;
// lists of objects are kept as their JSON text. The top-level context of a
// batch is merged into each message's context (the message's keys win).
//
// The event id is derived from the app and messageId, so a CDP's retry of a
// message gets the same id, and a messageId seen within the dedup window is
// dropped (herald_ingest_duplicates_total{api="segment"}). A batch is
// all-or-nothing: one bad message refuses the whole batch with 400 naming
// it (batch[3].userId), and nothing reaches Kafka.
//
// Times: "timestamp" when given; else, as Segment does, the receive time
// corrected by the client's clock skew (receivedAt - (sentAt -
// originalTimestamp)) when both are given; else originalTimestamp; else
// the receive time. Times more than a day ahead are refused.

// Segment's limits.
const (
	segMaxCall     = 32 << 10  // one message
	segMaxBatch    = 500 << 10 // one batch request
	segMaxItems    = 2500      // messages in one batch
	segMaxDepth    = 4         // levels of nested properties and traits
	segMaxIDLen    = maxIDLen  // userId, anonymousId, messageId, groupId, previousId
	segMaxContextB = 16 << 10  // one message's context, encoded
)

// Segment call types.
const (
	segTrack    = "track"
	segIdentify = "identify"
	segPage     = "page"
	segScreen   = "screen"
	segGroup    = "group"
	segAlias    = "alias"
	segBatch    = "batch"
)

// segMessage is one Segment message; ids may be strings or numbers.
type segMessage struct {
	Type              string          `json:"type"`
	UserID            json.RawMessage `json:"userId"`
	AnonymousID       json.RawMessage `json:"anonymousId"`
	MessageID         json.RawMessage `json:"messageId"`
	Event             json.RawMessage `json:"event"`
	Name              json.RawMessage `json:"name"`
	Category          json.RawMessage `json:"category"`
	GroupID           json.RawMessage `json:"groupId"`
	PreviousID        json.RawMessage `json:"previousId"`
	Properties        json.RawMessage `json:"properties"`
	Traits            json.RawMessage `json:"traits"`
	Context           json.RawMessage `json:"context"`
	Timestamp         json.RawMessage `json:"timestamp"`
	OriginalTimestamp json.RawMessage `json:"originalTimestamp"`
	SentAt            json.RawMessage `json:"sentAt"`
	WriteKey          string          `json:"writeKey"`
}

// segBatchBody is the body of /v1/batch.
type segBatchBody struct {
	Batch    []json.RawMessage `json:"batch"`
	Context  json.RawMessage   `json:"context"`
	SentAt   json.RawMessage   `json:"sentAt"`
	WriteKey string            `json:"writeKey"`
}

// segment serves one Segment route.
func (s *Server) segment(typ, route string) func(*statusWriter, *http.Request) {
	return func(w *statusWriter, r *http.Request) {
		body, aerr := s.readBody(w, r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		now := time.Now().UTC()
		var events []*schemas.Event
		if typ == segBatch {
			events, aerr = s.segmentBatch(r, body, now)
		} else {
			events, aerr = s.segmentOne(r, typ, body, now)
		}
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		fresh, keys := s.fresh(apiSegment, events, func(e *schemas.Event) string { return e.App + "|" + e.ID })
		if err := s.produce(r.Context(), fresh, nil); err != nil {
			writeError(w, s.produceError(route, err))
			return
		}
		s.remember(keys)
		writeJSON(w, http.StatusOK, segAnswer{Success: true, Events: len(fresh), Duplicates: len(events) - len(fresh)})
	}
}

// segAnswer is Segment's {"success":true} with counts.
type segAnswer struct {
	Success    bool `json:"success"`
	Events     int  `json:"events"`
	Duplicates int  `json:"duplicates"`
}

func (s *Server) segmentOne(r *http.Request, typ string, body []byte, now time.Time) ([]*schemas.Event, *apiError) {
	if len(body) > segMaxCall {
		return nil, &apiError{
			Code: http.StatusRequestEntityTooLarge, Field: "body",
			Msg: fmt.Sprintf("is %d bytes, a single %s call takes at most %d (use /v1/batch)", len(body), typ, segMaxCall),
		}
	}
	var m segMessage
	if aerr := decodeStrict(body, &m); aerr != nil {
		return nil, aerr
	}
	app, aerr := s.writeKeyApp(r, m.WriteKey)
	if aerr != nil {
		return nil, aerr
	}
	ev, aerr := segmentEvent(app, typ, "", &m, nil, nil, now)
	if aerr != nil {
		return nil, aerr
	}
	return []*schemas.Event{ev}, nil
}

func (s *Server) segmentBatch(r *http.Request, body []byte, now time.Time) ([]*schemas.Event, *apiError) {
	if len(body) > segMaxBatch {
		return nil, &apiError{
			Code: http.StatusRequestEntityTooLarge, Field: "body",
			Msg: fmt.Sprintf("is %d bytes, a batch takes at most %d", len(body), segMaxBatch),
		}
	}
	// One pass into typed messages; only a body that fails it is decoded
	// again item by item, to name the message at fault.
	var (
		b     segBatchBody
		typed struct {
			Batch    []segMessage    `json:"batch"`
			Context  json.RawMessage `json:"context"`
			SentAt   json.RawMessage `json:"sentAt"`
			WriteKey string          `json:"writeKey"`
		}
	)
	if err := json.Unmarshal(body, &typed); err == nil {
		b.Context, b.SentAt, b.WriteKey = typed.Context, typed.SentAt, typed.WriteKey
		b.Batch = make([]json.RawMessage, len(typed.Batch)) // counted, not decoded again
	} else if aerr := decodeStrict(body, &b); aerr != nil {
		return nil, aerr
	} else {
		typed.Batch = nil
	}
	app, aerr := s.writeKeyApp(r, b.WriteKey)
	if aerr != nil {
		return nil, aerr
	}
	switch {
	case len(b.Batch) == 0:
		return nil, badField("batch", "is required: a list of 1 to %d messages", segMaxItems)
	case len(b.Batch) > segMaxItems:
		return nil, &apiError{
			Code: http.StatusRequestEntityTooLarge, Field: "batch",
			Msg: fmt.Sprintf("has %d messages, at most %d are allowed", len(b.Batch), segMaxItems),
		}
	}
	shared, aerr := decodeObject("context", b.Context)
	if aerr != nil {
		return nil, aerr
	}
	events := make([]*schemas.Event, 0, len(b.Batch))
	for i, raw := range b.Batch {
		prefix := "batch[" + strconv.Itoa(i) + "]."
		var m segMessage
		if typed.Batch != nil {
			m = typed.Batch[i]
		} else if err := json.Unmarshal(raw, &m); err != nil {
			aerr := jsonError(err)
			if aerr.Field == "body" {
				aerr.Field = strings.TrimSuffix(prefix, ".")
			} else {
				aerr.Field = prefix + aerr.Field
			}
			return nil, aerr
		}
		if m.WriteKey != "" && m.WriteKey != b.WriteKey && b.WriteKey != "" {
			return nil, &apiError{Code: http.StatusUnauthorized, Field: prefix + "writeKey", Msg: "differs from the batch's write key"}
		}
		switch m.Type {
		case segTrack, segIdentify, segPage, segScreen, segGroup, segAlias:
		case "":
			return nil, badField(prefix+"type", "is required: track, identify, page, screen, group or alias")
		default:
			return nil, badField(prefix+"type", "%s is not a message type: want track, identify, page, screen, group or alias", quote(m.Type))
		}
		ev, aerr := segmentEvent(app, m.Type, prefix, &m, shared, b.SentAt, now)
		if aerr != nil {
			return nil, aerr
		}
		events = append(events, ev)
	}
	return events, nil
}

// writeKeyApp authenticates a Segment call: the write key is the Basic auth
// user name or the body's writeKey; if both are given they must agree.
func (s *Server) writeKeyApp(r *http.Request, bodyKey string) (*apps.App, *apiError) {
	key, field := bodyKey, "writeKey"
	if h := r.Header.Get("Authorization"); h != "" {
		user, _, ok := r.BasicAuth()
		if !ok || user == "" {
			return nil, &apiError{Code: http.StatusUnauthorized, Field: "Authorization", Msg: "must be Basic auth with the write key as the user name"}
		}
		if bodyKey != "" && bodyKey != user {
			return nil, &apiError{Code: http.StatusUnauthorized, Field: "writeKey", Msg: "differs from the write key of the Authorization header"}
		}
		key, field = user, "Authorization"
	}
	if key == "" {
		return nil, &apiError{
			Code: http.StatusUnauthorized, Field: "writeKey",
			Msg: "a write key is required: Basic auth user name, or writeKey in the body",
		}
	}
	app, ok := s.reg.ByWriteKey(key)
	if !ok {
		return nil, &apiError{Code: http.StatusUnauthorized, Field: field, Msg: "unknown write key"}
	}
	if ok, wait := s.lim.allow("writekey:" + key); !ok {
		s.m.throttled.Inc()
		return nil, throttled(field, wait)
	}
	return app, nil
}

// segmentEvent maps one message of type typ. prefix ("batch[3].") names
// its fields in errors; shared is the batch's context; batchSentAt the
// batch's sentAt.
func segmentEvent(app *apps.App, typ, prefix string, m *segMessage, shared map[string]any, batchSentAt json.RawMessage, now time.Time) (*schemas.Event, *apiError) {
	userID, aerr := segID(prefix+"userId", m.UserID)
	if aerr != nil {
		return nil, aerr
	}
	anonID, aerr := segID(prefix+"anonymousId", m.AnonymousID)
	if aerr != nil {
		return nil, aerr
	}
	if userID == "" && anonID == "" {
		return nil, badField(prefix+"userId", "userId or anonymousId is required")
	}
	msgID, aerr := segID(prefix+"messageId", m.MessageID)
	if aerr != nil {
		return nil, aerr
	}
	id := newEventID()
	if msgID != "" {
		sum := sha256.Sum256([]byte("segment|" + app.ID + "|" + msgID))
		id = hex.EncodeToString(sum[:16])
	}
	at, aerr := segTime(prefix, m, batchSentAt, now)
	if aerr != nil {
		return nil, aerr
	}
	ctx, aerr := decodeObject(prefix+"context", m.Context)
	if aerr != nil {
		return nil, aerr
	}
	ctx = mergeContext(shared, ctx)
	if ctx != nil {
		if b, err := json.Marshal(ctx); err != nil || len(b) > segMaxContextB {
			return nil, badField(prefix+"context", "is larger than %d bytes", segMaxContextB)
		}
	}
	ev := &schemas.Event{
		ID:          id,
		App:         app.ID,
		Time:        at,
		Received:    now,
		UserID:      userID,
		AnonymousID: anonID,
		Context:     ctx,
	}
	ev.Language, ev.Timezone = contextLocale(ctx)
	switch typ {
	case segTrack:
		name, aerr := segString(prefix+"event", m.Event, maxNameLen)
		if aerr != nil {
			return nil, aerr
		}
		if name == "" {
			return nil, badField(prefix+"event", "is required: the name of the action")
		}
		if reservedEvents[strings.ToLower(name)] {
			return nil, badField(prefix+"event", "%s is reserved for events Herald produces itself", quote(name))
		}
		ev.Kind, ev.Name = schemas.KindEvent, name
		if ev.Attributes, aerr = flattenValues(prefix+"properties", m.Properties, attributeRules); aerr != nil {
			return nil, aerr
		}
	case segIdentify:
		ev.Kind = schemas.KindTags
		if ev.Tags, aerr = flattenValues(prefix+"traits", m.Traits, tagRules); aerr != nil {
			return nil, aerr
		}
	case segPage, segScreen:
		ev.Kind, ev.Name = schemas.KindEvent, schemas.EventPageView
		if typ == segScreen {
			ev.Name = schemas.EventScreenOpen
		}
		if ev.Attributes, aerr = flattenValues(prefix+"properties", m.Properties, attributeRules); aerr != nil {
			return nil, aerr
		}
		for _, f := range []struct {
			name string
			raw  json.RawMessage
		}{{"name", m.Name}, {"category", m.Category}} {
			v, aerr := segString(prefix+f.name, f.raw, maxStringValue)
			if aerr != nil {
				return nil, aerr
			}
			if v != "" {
				if ev.Attributes == nil {
					ev.Attributes = make(map[string]any, 2)
				}
				ev.Attributes[f.name] = v
			}
		}
	case segGroup:
		gid, aerr := segID(prefix+"groupId", m.GroupID)
		if aerr != nil {
			return nil, aerr
		}
		if gid == "" {
			return nil, badField(prefix+"groupId", "is required for group")
		}
		ev.Kind, ev.Name = schemas.KindEvent, schemas.EventGroup
		if ev.Attributes, aerr = flattenValues(prefix+"traits", m.Traits, attributeRules); aerr != nil {
			return nil, aerr
		}
		if ev.Attributes == nil {
			ev.Attributes = make(map[string]any, 1)
		}
		ev.Attributes["group_id"] = gid
	case segAlias:
		prev, aerr := segID(prefix+"previousId", m.PreviousID)
		if aerr != nil {
			return nil, aerr
		}
		switch {
		case prev == "":
			return nil, badField(prefix+"previousId", "is required for alias: the earlier id of the user")
		case userID == "":
			return nil, badField(prefix+"userId", "is required for alias: the new id of the user")
		}
		ev.Kind, ev.PreviousID = schemas.KindAlias, prev
	}
	return ev, nil
}

// segID reads an id: a string, or a number taken as its text. Absent or
// null is "".
func segID(field string, raw json.RawMessage) (string, *apiError) {
	if isNull(raw) {
		return "", nil
	}
	if s, ok := plainString(raw); ok {
		return s, checkText(field, s, segMaxIDLen)
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", badField(field, "malformed value: %v", err)
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = string(x)
	default:
		return "", badField(field, "must be a string")
	}
	return s, checkText(field, s, segMaxIDLen)
}

// plainString is the value of a JSON string without escapes, taken
// without a decoder: most ids and names are such, and this is the hot path
// of a batch. ok is false for anything else, to be decoded in full.
func plainString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c == '\\' || c == '"' || c < 0x20 || c >= 0x80 {
			return "", false
		}
	}
	return string(in), true
}

// segString reads an optional string of at most maxLen bytes.
func segString(field string, raw json.RawMessage, maxLen int) (string, *apiError) {
	if isNull(raw) {
		return "", nil
	}
	if s, ok := plainString(raw); ok {
		return s, checkText(field, s, maxLen)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badField(field, "must be a string")
	}
	return s, checkText(field, s, maxLen)
}

// segTime is when the message happened, see the package comment.
func segTime(prefix string, m *segMessage, batchSentAt json.RawMessage, now time.Time) (time.Time, *apiError) {
	parse := func(name string, raw json.RawMessage) (time.Time, *apiError) {
		if isNull(raw) {
			return time.Time{}, nil
		}
		s, ok := plainString(raw)
		if !ok && json.Unmarshal(raw, &s) != nil {
			return time.Time{}, badField(prefix+name, "must be an ISO 8601 date-time string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, badField(prefix+name, "%s is not an ISO 8601 date-time, e.g. 2026-11-24T10:30:00.000Z", quote(s))
		}
		return t.UTC(), nil
	}
	var err error
	ts, aerr := parse("timestamp", m.Timestamp)
	if aerr != nil {
		return time.Time{}, aerr
	}
	orig, aerr := parse("originalTimestamp", m.OriginalTimestamp)
	if aerr != nil {
		return time.Time{}, aerr
	}
	sent, aerr := parse("sentAt", m.SentAt)
	if aerr != nil {
		return time.Time{}, aerr
	}
	if sent.IsZero() && !isNull(batchSentAt) {
		var s string
		if json.Unmarshal(batchSentAt, &s) != nil {
			return time.Time{}, badField("sentAt", "must be an ISO 8601 date-time string")
		}
		if sent, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return time.Time{}, badField("sentAt", "%s is not an ISO 8601 date-time, e.g. 2026-11-24T10:30:00.000Z", quote(s))
		}
	}
	at := now
	switch {
	case !ts.IsZero():
		at = ts
	case !orig.IsZero() && !sent.IsZero():
		at = now.Add(-sent.Sub(orig))
	case !orig.IsZero():
		at = orig
	}
	if at.After(now.Add(maxFuture)) {
		return time.Time{}, badField(prefix+"timestamp", "%s is more than %s in the future", at.Format(time.RFC3339), maxFuture)
	}
	if at.Unix() <= 0 {
		return time.Time{}, badField(prefix+"timestamp", "%s is before 1970", at.Format(time.RFC3339))
	}
	return at, nil
}

// decodeObject decodes an optional JSON object (context); absent or null
// is nil.
func decodeObject(field string, raw json.RawMessage) (map[string]any, *apiError) {
	if isNull(raw) {
		return nil, nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, badField(field, "must be an object")
	}
	return m, nil
}

// mergeContext is the batch's context with the message's keys over it.
func mergeContext(shared, own map[string]any) map[string]any {
	if len(shared) == 0 {
		return own
	}
	if len(own) == 0 {
		return shared // shared is not modified by anyone: safe to share
	}
	out := make(map[string]any, len(shared)+len(own))
	for k, v := range shared {
		out[k] = v
	}
	for k, v := range own {
		out[k] = v
	}
	return out
}

// contextLocale takes the language ("en" of "en-US") and a valid IANA time
// zone from a context; invalid values are left to the context itself.
func contextLocale(ctx map[string]any) (lang, tz string) {
	if l, ok := ctx["locale"].(string); ok {
		l, _, _ = strings.Cut(strings.ReplaceAll(l, "_", "-"), "-")
		if (len(l) == 2 || len(l) == 3) && checkLanguage("", l) == nil {
			lang = strings.ToLower(l)
		}
	}
	if z, ok := ctx["timezone"].(string); ok && z != "" && z != "Local" && len(z) <= 64 {
		if _, err := time.LoadLocation(z); err == nil {
			tz = z
		}
	}
	return lang, tz
}

// flattenValues decodes properties or traits: nested objects become dotted
// names (up to segMaxDepth levels), lists of objects or lists their JSON
// text; the values are then checked as decodeValues does.
func flattenValues(field string, raw json.RawMessage, rules valueRules) (map[string]any, *apiError) {
	obj, aerr := decodeObject(field, raw)
	if aerr != nil {
		return nil, badField(field, "must be an object of %s names to values", rules.what)
	}
	if len(obj) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(obj))
	if aerr := flattenInto(out, field, "", obj, 1, rules); aerr != nil {
		return nil, aerr
	}
	return out, nil
}

func flattenInto(out map[string]any, field, prefix string, obj map[string]any, depth int, rules valueRules) *apiError {
	for k, v := range obj {
		name := prefix + k
		f := field + "." + name
		if k == "" {
			return badField(field, "has an empty %s name", rules.what)
		}
		if aerr := checkText(f, name, maxNameLen); aerr != nil {
			return aerr
		}
		switch x := v.(type) {
		case map[string]any:
			if depth >= segMaxDepth {
				return badField(f, "is nested deeper than %d levels", segMaxDepth)
			}
			if aerr := flattenInto(out, field, name+".", x, depth+1, rules); aerr != nil {
				return aerr
			}
			continue
		case string:
			if aerr := checkValueString(f, x); aerr != nil {
				return aerr
			}
		case json.Number:
			if aerr := checkNumber(f, x); aerr != nil {
				return aerr
			}
		case []any:
			l, aerr := flattenList(f, x, rules)
			if aerr != nil {
				return aerr
			}
			v = l
		}
		if len(out) >= maxValues {
			return badField(field, "has more than %d %ss (nested ones counted)", maxValues, rules.what)
		}
		out[name] = v
	}
	return nil
}

// flattenList keeps a list of scalars (tags: as strings); a list holding
// objects or lists is kept as its JSON text.
func flattenList(field string, l []any, rules valueRules) (any, *apiError) {
	if len(l) > maxListLen {
		return nil, badField(field, "has %d items, at most %d are allowed", len(l), maxListLen)
	}
	for _, it := range l {
		switch it.(type) {
		case map[string]any, []any:
			b, err := json.Marshal(l)
			if err != nil {
				return nil, badField(field, "cannot be encoded: %v", err)
			}
			return string(b), checkValueString(field, string(b))
		}
	}
	for i, it := range l {
		itf := fmt.Sprintf("%s[%d]", field, i)
		switch x := it.(type) {
		case string:
			if aerr := checkValueString(itf, x); aerr != nil {
				return nil, aerr
			}
		case json.Number:
			if aerr := checkNumber(itf, x); aerr != nil {
				return nil, aerr
			}
			if !rules.listAny {
				l[i] = string(x)
			}
		case bool:
			if !rules.listAny {
				l[i] = fmt.Sprint(x)
			}
		case nil:
			return nil, badField(itf, "is null: list items are strings, numbers or booleans")
		}
	}
	return l, nil
}

// decodeStrict decodes one JSON object body into v, refusing trailing data.
func decodeStrict(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err == nil {
		return badField("body", "has data after the JSON object")
	}
	return nil
}

// segmentRoutes are the Segment-spec /v1 routes for CDPs.
func (s *Server) segmentRoutes() map[string]*route {
	routes := make(map[string]*route, 7)
	for _, typ := range []string{segTrack, segIdentify, segPage, segScreen, segGroup, segAlias, segBatch} {
		name := "segment_" + typ
		routes["/v1/"+typ] = &route{name: name, allow: http.MethodPost, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodPost: s.segment(typ, name),
		}}
	}
	return routes
}

package analytics

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// Range of ClickHouse's DateTime that clickhouse-go accepts; outside it the
// value would wrap around silently.
var (
	minTime = time.Unix(0, 0).UTC()
	maxTime = time.Date(2105, 12, 31, 23, 59, 59, 0, time.UTC)
)

// errRange is wrapped by the decoding errors of values that do not fit their
// column; such records are dead-lettered.
var errRange = errors.New("value out of column range")

// Limits of string values, in bytes. ClickHouse's String has no limit of its
// own, but a value this large is a producer's bug (or an attack) and would
// bloat every query that reads the column: the record is dead-lettered
// with the field named.
const (
	// maxIDBytes bounds ids, names, codes and numbers.
	maxIDBytes = 1 << 10
	// maxTextBytes bounds free text: inbound text and payload, error
	// messages, attribute values (Meta's text messages are at most 4,096
	// characters).
	maxTextBytes = 64 << 10
	// maxJSONBytes bounds the attributes and tags JSON of one event.
	maxJSONBytes = 1 << 20
)

// errTooLong is wrapped by the decoding errors of strings over their limit.
var errTooLong = errors.New("value too long")

// Ranks order the states of a message (see migrations/0002): a row of a
// higher rank replaces the current state, whatever order rows arrive in.
var stateRanks = map[string]uint8{
	"requested": 1,
	"in_doubt":  2,
	"expired":   3,
	"sent":      4,
	"failed":    5,
	"delivered": 6,
	"read":      7,
}

// outcomeStates maps the dispatcher's outcome to the message state.
var outcomeStates = map[schemas.OutcomeState]string{
	schemas.OutcomeAccepted: "sent",
	schemas.OutcomeFailed:   "failed",
	schemas.OutcomeExpired:  "expired",
	schemas.OutcomeInDoubt:  "in_doubt",
}

// costRanks choose the status whose day a cost row keeps: Meta charges a
// message when it is delivered, so delivered, else read, else sent.
var costRanks = map[string]uint8{"delivered": 3, "read": 2, "sent": 1}

// stateVersion is message_state's version: the rank, then the time.
func stateVersion(rank uint8, t time.Time) uint64 {
	return uint64(rank)<<40 | uint64(t.Unix())
}

// Pricer prices one billable WhatsApp message: category is Meta's
// pricing.category (marketing, utility, authentication, service),
// country the recipient's ISO 3166-1 alpha-2 code, inWindow whether it was
// sent inside the 24-hour customer-service window. ok is false when no
// rate is known (the cost row is stored with price_known = 0).
type Pricer interface {
	Price(category, country string, inWindow bool) (micros int64, currency string, ok bool)
}

// rows are the decoded rows of one batch, by table.
type rows struct {
	events   []eventRow
	statuses []statusRow
	inbound  []inboundRow
	messages []messageRow
	states   []stateRow
	costs    []costRow
	metas    []metaRow
	wamids   []wamidRow
	open     []openFact
	pricer   Pricer
}

// reset empties every slice, keeping its capacity, and drops what its
// values referenced, so that the records of the last batch can be collected.
func (r *rows) reset() {
	r.events = truncate(r.events)
	r.statuses = truncate(r.statuses)
	r.inbound = truncate(r.inbound)
	r.messages = truncate(r.messages)
	r.states = truncate(r.states)
	r.costs = truncate(r.costs)
	r.metas = truncate(r.metas)
	r.wamids = truncate(r.wamids)
	r.open = truncate(r.open)
}

// truncate clears s and returns it with length 0.
func truncate[T any](s []T) []T {
	clear(s)
	return s[:0]
}

func (r *rows) len() int {
	return len(r.events) + len(r.statuses) + len(r.inbound) + len(r.messages) + len(r.states) + len(r.costs) +
		len(r.metas) + len(r.wamids) + len(r.open)
}

// add decodes rec, the src'th record of the batch, into rows. On error
// nothing is added and the error is the dead-letter reason.
func (r *rows) add(rec *kgo.Record, src int) error {
	switch rec.Topic {
	case schemas.TopicEvents:
		// The event's strings share one copy of the value: its rows are
		// dropped together once inserted (rows.reset), and nothing of an
		// event outlives its batch (the attribution cache holds dispatches).
		e, err := schemas.DecodeEventShared(rec.Value)
		if err != nil {
			return fmt.Errorf("decoding event: %w", err)
		}
		if err := r.addEvent(e, src); err != nil {
			return fmt.Errorf("event %s: %w", clip(e.ID, 64), err)
		}
	case schemas.TopicOutcomes:
		o, err := schemas.DecodeOutcome(rec.Value)
		if err != nil {
			return fmt.Errorf("decoding outcome: %w", err)
		}
		mr, err := messageRowOf(o)
		if err != nil {
			return fmt.Errorf("outcome %s: %w", clip(o.DispatchID, 64), err)
		}
		mr.src = src
		r.messages = append(r.messages, mr)
		r.metas = append(r.metas, metaOf(&mr))
		if mr.providerID != "" {
			r.wamids = append(r.wamids, wamidRow{src: src, app: mr.app, wamid: mr.providerID, dispatchID: mr.dispatchID})
		}
		r.open = appendMessageFacts(r.open, &mr)
		st := outcomeStates[o.State]
		rank := stateRanks[st]
		r.states = append(r.states, stateRow{
			src: src, app: mr.app, dispatchID: mr.dispatchID, state: st, rank: rank, version: stateVersion(rank, mr.time),
			time: mr.time, wamid: mr.providerID, errorCode: mr.errorCode, origin: "outcome",
		})
	case schemas.TopicDispatch:
		d, err := schemas.DecodeDispatchRequest(rec.Value)
		if err != nil {
			return fmt.Errorf("decoding dispatch request: %w", err)
		}
		mr, err := requestRowOf(d)
		if err != nil {
			return fmt.Errorf("dispatch request %s: %w", clip(d.ID, 64), err)
		}
		// Not a messages row: that table holds the dispatcher's outcomes
		// (its version is a time in seconds, and a request created in the
		// second its outcome was decided could replace the outcome).
		mr.src = src
		r.metas = append(r.metas, metaOf(&mr))
		r.open = appendMessageFacts(r.open, &mr)
		rank := stateRanks["requested"]
		r.states = append(r.states, stateRow{
			src: src, app: mr.app, dispatchID: mr.dispatchID, state: "requested", rank: rank,
			version: stateVersion(rank, mr.time), time: mr.time, origin: "dispatch",
		})
	default:
		return fmt.Errorf("unexpected topic %q", rec.Topic)
	}
	return nil
}

// addEvent adds the rows of a valid event: its events row and, by kind,
// its inbound row or its statuses, message_state and costs rows.
func (r *rows) addEvent(e *schemas.Event, src int) error {
	er, err := eventRowOf(e)
	if err != nil {
		return err
	}
	er.src = src
	// The rows are built in place (an events row is over 400 bytes), and
	// dropped again when the event turns out invalid.
	var in *inboundRow
	if e.Kind == schemas.KindInbound && e.Inbound != nil {
		r.inbound = append(r.inbound, inboundRowOf(e, &er))
		in = &r.inbound[len(r.inbound)-1]
		if err := checkInbound(in); err != nil {
			r.inbound = drop(r.inbound)
			return err
		}
		in.src = src
	}
	var st *statusRow
	if s := e.Status; s != nil && e.Kind == schemas.KindStatus {
		row, err := statusRowOf(e, &er)
		if err != nil {
			return err // (an inbound event is no status: no inbound row to drop)
		}
		row.src = src
		r.statuses = append(r.statuses, row)
		st = &r.statuses[len(r.statuses)-1]
		if rank, ok := stateRanks[s.Status]; ok && s.DispatchID != "" && s.Status != "requested" && s.Status != "in_doubt" && s.Status != "expired" {
			r.states = append(r.states, stateRow{
				src: src, app: e.App, dispatchID: s.DispatchID, state: s.Status, rank: rank, version: stateVersion(rank, er.time),
				time: er.time, wamid: s.WAMID, errorCode: row.errorCode, origin: "status", eventID: e.ID,
			})
		}
	}
	r.events = append(r.events, er)
	if in != nil && in.contextID != "" {
		r.open = append(r.open, openFact{src: src, app: in.app, ref: "w:" + in.contextID, state: "replied", time: in.time})
	}
	if st != nil {
		var cost *costRow
		if st.billable == 1 && st.wamid != "" {
			r.costs = append(r.costs, r.costRowOf(st))
			cost = &r.costs[len(r.costs)-1]
		}
		if st.dispatchID != "" {
			if st.wamid != "" {
				r.wamids = append(r.wamids, wamidRow{src: src, app: st.app, wamid: st.wamid, dispatchID: st.dispatchID})
			}
			r.open = appendStatusFacts(r.open, st, cost)
		}
	}
	return nil
}

// drop removes the last element of s, keeping nothing of it alive.
func drop[T any](s []T) []T {
	clear(s[len(s)-1:])
	return s[:len(s)-1]
}

// eventRowOf converts a valid event to its events row.
// profileID is a profile key without its app: "anon:visitor-1",
// "user:ana-7", or a hwid.
func profileID(key string) string {
	if _, id, ok := strings.Cut(key, "|"); ok {
		return id
	}
	return key
}

func eventRowOf(e *schemas.Event) (eventRow, error) {
	t, err := requiredTime("time", e.Time)
	if err != nil {
		return eventRow{}, err
	}
	received, err := optionalTime("received", e.Received)
	if err != nil {
		return eventRow{}, err
	}
	if e.DeviceType < 0 || e.DeviceType > math.MaxUint8 {
		return eventRow{}, fmt.Errorf("%w: device_type %d does not fit UInt8", errRange, e.DeviceType)
	}
	attributes := e.Attributes
	if m := e.Merge; e.Kind == schemas.KindMerge && m != nil {
		// An identity-resolution step: its profile ids, not its payload
		// (the segmenter's own encoding of a profile).
		attributes = map[string]any{"step": m.Step, "from": profileID(m.From), "into": profileID(m.Into)}
	}
	keys, values := flatten(attributes)
	attrs, err := jsonObject(attributes)
	if err != nil {
		return eventRow{}, fmt.Errorf("encoding attributes: %w", err)
	}
	tags, err := jsonObject(e.Tags)
	if err != nil {
		return eventRow{}, fmt.Errorf("encoding tags: %w", err)
	}
	er := eventRow{
		id: e.ID, app: e.App, kind: string(e.Kind), name: e.Name,
		time: t, timeMS: uint16(e.Time.Nanosecond() / int(time.Millisecond)), date: utcDate(t), received: received,
		hwid: e.HWID, userID: e.UserID, anonymousID: e.AnonymousID, deviceType: uint8(e.DeviceType),
		language: e.Language, timezone: e.Timezone, country: e.Country,
		attrKeys: keys, attrValues: values, attributes: attrs, tags: tags,
	}
	if in := e.Inbound; in != nil {
		er.inFrom, er.inWAMID, er.inType, er.inText, er.inProfileName = in.From, in.WAMID, in.Type, in.Text, in.ProfileName
		er.phoneNumberID = in.PhoneNumberID
	}
	if st := e.Status; st != nil && er.phoneNumberID == "" {
		er.phoneNumberID = st.PhoneNumberID
	}
	if err := checkEvent(&er); err != nil {
		return eventRow{}, err
	}
	for i, k := range keys {
		if len(k) > maxIDBytes {
			return eventRow{}, fmt.Errorf("%w: attribute name %q... is %d bytes, over the limit of %d", errTooLong, clip(k, 32), len(k), maxIDBytes)
		}
		if len(values[i]) > maxTextBytes {
			return eventRow{}, fmt.Errorf("%w: attributes.%s is %d bytes, over the limit of %d", errTooLong, clip(k, 64), len(values[i]), maxTextBytes)
		}
	}
	return er, nil
}

// statusRowOf converts the status of a valid status event.
func statusRowOf(e *schemas.Event, er *eventRow) (statusRow, error) {
	st := e.Status
	code, err := int32Of("status.error_code", st.ErrorCode)
	if err != nil {
		return statusRow{}, err
	}
	row := statusRow{
		app: e.App, wamid: validUTF8(st.WAMID), status: validUTF8(st.Status), recipient: validUTF8(st.Recipient),
		dispatchID: validUTF8(st.DispatchID), pricingCategory: validUTF8(st.PricingCategory), billable: boolUInt8(st.Billable),
		errorCode: code, errorTitle: validUTF8(st.ErrorTitle), time: er.time, date: er.date, eventID: er.id,
		country: er.country, pricingType: validUTF8(st.PricingType), pricingModel: validUTF8(st.PricingModel),
	}
	err = checkStrings([]field{
		{"status.wamid", row.wamid, maxIDBytes},
		{"status.status", row.status, maxIDBytes},
		{"status.recipient", row.recipient, maxIDBytes},
		{"status.dispatch_id", row.dispatchID, maxIDBytes},
		{"status.pricing_category", row.pricingCategory, maxIDBytes},
		{"status.error_title", row.errorTitle, maxTextBytes},
		{"status.pricing_type", row.pricingType, maxIDBytes},
		{"status.pricing_model", row.pricingModel, maxIDBytes},
	})
	return row, err
}

// inboundRowOf builds the inbound row of a valid inbound event; its strings
// are checked by the caller.
func inboundRowOf(e *schemas.Event, er *eventRow) inboundRow {
	in := e.Inbound
	wamid := in.WAMID
	if wamid == "" {
		wamid = "event:" + e.ID // no wamid (a producer's test event): one row per event
	}
	text := validUTF8(in.Text)
	payload := validUTF8(in.Payload)
	kw := text
	if kw == "" {
		kw = payload
	}
	return inboundRow{
		app: e.App, wamid: validUTF8(wamid), from: er.inFrom, phoneNumberID: er.phoneNumberID,
		typ: er.inType, text: text, payload: payload, contextID: validUTF8(in.ContextID),
		profileName: er.inProfileName, keyword: keyword(kw), country: er.country,
		time: er.time, timeMS: er.timeMS, date: er.date, eventID: er.id,
	}
}

// costRowOf builds the cost row of a billable status. The message is in
// the service window when Meta says it was free for it
// (pricing.type free_customer_service) or priced it as a service
// conversation.
func (r *rows) costRowOf(st *statusRow) costRow {
	inWindow := st.pricingType == "free_customer_service" || st.pricingCategory == "service"
	c := costRow{
		src: st.src, app: st.app, wamid: st.wamid, dispatchID: st.dispatchID, pricingCategory: st.pricingCategory,
		pricingType: st.pricingType, country: st.country, inWindow: boolUInt8(inWindow),
		time: st.time, date: st.date, version: stateVersion(costRanks[st.status], st.time),
	}
	if r.pricer != nil {
		if micros, currency, ok := r.pricer.Price(st.pricingCategory, st.country, inWindow); ok {
			c.priceKnown, c.priceMicros, c.currency = 1, micros, currency
		}
	}
	return c
}

func messageRowOf(o *schemas.Outcome) (messageRow, error) {
	t, err := requiredTime("time", o.Time)
	if err != nil {
		return messageRow{}, err
	}
	requested, err := optionalTime("requested", o.Requested)
	if err != nil {
		return messageRow{}, err
	}
	code, err := int32Of("error_code", o.ErrorCode)
	if err != nil {
		return messageRow{}, err
	}
	if o.Attempts < 0 || o.Attempts > math.MaxUint16 {
		return messageRow{}, fmt.Errorf("%w: attempts %d does not fit UInt16", errRange, o.Attempts)
	}
	// The date of the request, not of the outcome: every outcome of one
	// dispatch must share the sorting key (and partition) to collapse.
	date := utcDate(t)
	if !o.Requested.IsZero() {
		date = utcDate(requested)
	}
	mr := messageRow{
		dispatchID: o.DispatchID, app: o.App, channel: string(o.Channel), sender: o.Sender, recipient: o.To,
		country: o.Country, state: string(o.State), providerID: o.ProviderID, template: o.Template,
		category: o.Category, sourceKind: o.Source.Kind, sourceName: o.Source.Name, sourceEventID: o.Source.EventID,
		errorCode: code, errorMessage: o.ErrorMessage, attempts: uint16(o.Attempts),
		requested: requested, time: t, date: date,
	}
	return mr, checkMessage(&mr)
}

// requestRowOf is what a dispatch request says of its dispatch, as a
// messages row (state "requested", time its creation): the source of its
// dispatch_meta row and facts.
func requestRowOf(d *schemas.DispatchRequest) (messageRow, error) {
	t, err := requiredTime("created", d.Created)
	if err != nil {
		return messageRow{}, err
	}
	mr := messageRow{
		dispatchID: d.ID, app: d.App, channel: string(d.Channel), sender: d.Sender, recipient: d.To,
		country: d.Country, state: "requested", sourceKind: d.Source.Kind, sourceName: d.Source.Name,
		sourceEventID: d.Source.EventID, requested: t, time: t, date: utcDate(t),
	}
	if d.Template != nil {
		mr.template, mr.category = d.Template.Name, d.Template.Category
	}
	return mr, checkMessage(&mr)
}

// checkMessage makes the strings of a messages row valid UTF-8 and checks
// their lengths.
func checkMessage(m *messageRow) error {
	for _, p := range []*string{
		&m.dispatchID, &m.channel, &m.sender, &m.recipient, &m.country, &m.providerID, &m.template,
		&m.category, &m.sourceKind, &m.sourceName, &m.sourceEventID, &m.errorMessage,
	} {
		*p = validUTF8(*p)
	}
	return checkStrings([]field{
		{"dispatch_id", m.dispatchID, maxIDBytes},
		{"channel", m.channel, maxIDBytes},
		{"sender", m.sender, maxIDBytes},
		{"to", m.recipient, maxIDBytes},
		{"country", m.country, maxIDBytes},
		{"provider_id", m.providerID, maxIDBytes},
		{"template", m.template, maxIDBytes},
		{"category", m.category, maxIDBytes},
		{"source.kind", m.sourceKind, maxIDBytes},
		{"source.name", m.sourceName, maxIDBytes},
		{"source.event_id", m.sourceEventID, maxIDBytes},
		{"error_message", m.errorMessage, maxTextBytes},
	})
}

// field is a named string value and its limit.
type field struct {
	name  string
	value string
	limit int
}

// checkStrings returns an error naming the first field over its limit.
func checkStrings(fs []field) error {
	for _, f := range fs {
		if len(f.value) > f.limit {
			return fmt.Errorf("%w: %s is %d bytes, over the limit of %d", errTooLong, f.name, len(f.value), f.limit)
		}
	}
	return nil
}

// checkEvent makes the strings of an events row valid UTF-8 and checks
// their lengths (the list of fields stays on the stack: checkStrings keeps
// no reference to it).
func checkEvent(r *eventRow) error {
	for _, p := range []*string{
		&r.id, &r.kind, &r.name, &r.hwid, &r.userID, &r.anonymousID, &r.language, &r.timezone, &r.country,
		&r.attributes, &r.tags, &r.inFrom, &r.inWAMID, &r.inType, &r.inText, &r.inProfileName, &r.phoneNumberID,
	} {
		*p = validUTF8(*p)
	}
	for i := range r.attrKeys {
		r.attrKeys[i] = validUTF8(r.attrKeys[i])
		r.attrValues[i] = validUTF8(r.attrValues[i])
	}
	return checkStrings([]field{
		{"id", r.id, maxIDBytes},
		{"name", r.name, maxIDBytes},
		{"hwid", r.hwid, maxIDBytes},
		{"user_id", r.userID, maxIDBytes},
		{"anonymous_id", r.anonymousID, maxIDBytes},
		{"language", r.language, maxIDBytes},
		{"timezone", r.timezone, maxIDBytes},
		{"country", r.country, maxIDBytes},
		{"attributes", r.attributes, maxJSONBytes},
		{"tags", r.tags, maxJSONBytes},
		{"inbound.from", r.inFrom, maxIDBytes},
		{"inbound.wamid", r.inWAMID, maxIDBytes},
		{"inbound.type", r.inType, maxIDBytes},
		{"inbound.text", r.inText, maxTextBytes},
		{"inbound.profile_name", r.inProfileName, maxIDBytes},
		{"phone_number_id", r.phoneNumberID, maxIDBytes},
	})
}

func checkInbound(r *inboundRow) error {
	return checkStrings([]field{{"inbound.payload", r.payload, maxTextBytes}, {"inbound.context_id", r.contextID, maxIDBytes}})
}

// validUTF8 replaces each invalid UTF-8 sequence of s with U+FFFD, as
// encoding/json does when decoding: ClickHouse stores bytes, but every
// reader (JSON output, drivers, terminals) expects UTF-8.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// keyword is the first word of s, lowercased: how inbound_hourly and the
// keyword queries group messages ("" when s has no word).
func keyword(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsSpace(r) })
	if i < 0 {
		return ""
	}
	s = s[i:]
	if j := strings.IndexFunc(s, unicode.IsSpace); j >= 0 {
		s = s[:j]
	}
	if len(s) > 256 {
		s = s[:256]
		s = strings.ToValidUTF8(s, "")
	}
	return strings.ToLower(s)
}

// requiredTime checks that t fits DateTime and returns it in UTC.
func requiredTime(field string, t time.Time) (time.Time, error) {
	t = t.UTC()
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, fmt.Errorf("%w: %s %s is outside 1970-01-01..2105-12-31 UTC", errRange, field, t.Format(time.RFC3339))
	}
	return t, nil
}

// optionalTime is requiredTime with the zero time stored as 1970-01-01.
func optionalTime(field string, t time.Time) (time.Time, error) {
	if t.IsZero() {
		return minTime, nil
	}
	return requiredTime(field, t)
}

func utcDate(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func int32Of(field string, n int) (int32, error) {
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %s %d does not fit Int32", errRange, field, n)
	}
	return int32(n), nil
}

func boolUInt8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// jsonObject encodes m as a JSON object, "{}" when empty.
func jsonObject(m map[string]any) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// flatten returns m's keys, sorted, and their values as strings: strings as
// they are, null as "", anything else (numbers, bools, lists, objects) as
// its JSON.
func flatten(m map[string]any) (keys, values []string) {
	if len(m) == 0 {
		return []string{}, []string{}
	}
	keys = make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	values = make([]string, len(keys))
	for i, k := range keys {
		values[i] = scalarString(m[k])
	}
	return keys, values
}

func scalarString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
}

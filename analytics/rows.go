package analytics

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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

// table is one ClickHouse table the sink writes: its name, its columns in
// insert order and how one row is appended in that order with typed values.
type table[R any] struct {
	name    string
	columns string
	append  func(b driver.Batch, r *R) error
}

func (t table[R]) insertQuery() string {
	return "INSERT INTO " + t.name + " (" + t.columns + ")"
}

type eventRow struct {
	id, app, kind, name             string
	time                            time.Time
	timeMS                          uint16
	date, received                  time.Time
	hwid, userID                    string
	deviceType                      uint8
	language, timezone, country     string
	attrKeys, attrValues            []string
	attributes, tags                string
	inFrom, inWAMID, inType, inText string
	inProfileName, phoneNumberID    string
}

var eventsTable = table[eventRow]{
	name: "events",
	columns: "id, app, kind, name, time, time_ms, date, received, hwid, user_id, device_type, " +
		"language, timezone, country, attr_keys, attr_values, attributes, tags, " +
		"inbound_from, inbound_wamid, inbound_type, inbound_text, inbound_profile_name, phone_number_id",
	append: func(b driver.Batch, r *eventRow) error {
		return b.Append(r.id, r.app, r.kind, r.name, r.time, r.timeMS, r.date, r.received, r.hwid, r.userID, r.deviceType,
			r.language, r.timezone, r.country, r.attrKeys, r.attrValues, r.attributes, r.tags,
			r.inFrom, r.inWAMID, r.inType, r.inText, r.inProfileName, r.phoneNumberID)
	},
}

type statusRow struct {
	app, wamid, status, recipient string
	dispatchID, pricingCategory   string
	billable                      uint8
	errorCode                     int32
	errorTitle                    string
	time, date                    time.Time
	eventID                       string
}

var statusesTable = table[statusRow]{
	name: "statuses",
	columns: "app, wamid, status, recipient, dispatch_id, pricing_category, billable, " +
		"error_code, error_title, time, date, event_id",
	append: func(b driver.Batch, r *statusRow) error {
		return b.Append(r.app, r.wamid, r.status, r.recipient, r.dispatchID, r.pricingCategory, r.billable,
			r.errorCode, r.errorTitle, r.time, r.date, r.eventID)
	},
}

type messageRow struct {
	dispatchID, app, channel, sender, recipient, country string
	state, providerID, template, category                string
	sourceKind, sourceName, sourceEventID                string
	errorCode                                            int32
	errorMessage                                         string
	attempts                                             uint16
	requested, time, date                                time.Time
}

var messagesTable = table[messageRow]{
	name: "messages",
	columns: "dispatch_id, app, channel, sender, recipient, country, state, provider_id, template, category, " +
		"source_kind, source_name, source_event_id, error_code, error_message, attempts, requested, time, date",
	append: func(b driver.Batch, r *messageRow) error {
		return b.Append(r.dispatchID, r.app, r.channel, r.sender, r.recipient, r.country, r.state, r.providerID, r.template, r.category,
			r.sourceKind, r.sourceName, r.sourceEventID, r.errorCode, r.errorMessage, r.attempts, r.requested, r.time, r.date)
	},
}

// rows are the decoded rows of one batch, by table.
type rows struct {
	events   []eventRow
	statuses []statusRow
	messages []messageRow
}

func (r *rows) len() int { return len(r.events) + len(r.statuses) + len(r.messages) }

// add decodes rec into rows. On error nothing is added and the error is the
// dead-letter reason.
func (r *rows) add(rec *kgo.Record) error {
	switch rec.Topic {
	case schemas.TopicEvents:
		e, err := schemas.DecodeEvent(rec.Value)
		if err != nil {
			return fmt.Errorf("decoding event: %w", err)
		}
		er, sr, err := eventRows(e)
		if err != nil {
			return fmt.Errorf("event %s: %w", e.ID, err)
		}
		r.events = append(r.events, er)
		if sr != nil {
			r.statuses = append(r.statuses, *sr)
		}
	case schemas.TopicOutcomes:
		o, err := schemas.DecodeOutcome(rec.Value)
		if err != nil {
			return fmt.Errorf("decoding outcome: %w", err)
		}
		mr, err := messageRowOf(o)
		if err != nil {
			return fmt.Errorf("outcome %s: %w", o.DispatchID, err)
		}
		r.messages = append(r.messages, mr)
	default:
		return fmt.Errorf("unexpected topic %q", rec.Topic)
	}
	return nil
}

// eventRows converts a valid event: its events row and, for kind status, its
// statuses row.
func eventRows(e *schemas.Event) (eventRow, *statusRow, error) {
	t, err := requiredTime("time", e.Time)
	if err != nil {
		return eventRow{}, nil, err
	}
	received, err := optionalTime("received", e.Received)
	if err != nil {
		return eventRow{}, nil, err
	}
	if e.DeviceType < 0 || e.DeviceType > math.MaxUint8 {
		return eventRow{}, nil, fmt.Errorf("%w: device_type %d does not fit UInt8", errRange, e.DeviceType)
	}
	keys, values := flatten(e.Attributes)
	attrs, err := jsonObject(e.Attributes)
	if err != nil {
		return eventRow{}, nil, fmt.Errorf("encoding attributes: %w", err)
	}
	tags, err := jsonObject(e.Tags)
	if err != nil {
		return eventRow{}, nil, fmt.Errorf("encoding tags: %w", err)
	}
	er := eventRow{
		id: e.ID, app: e.App, kind: string(e.Kind), name: e.Name,
		time: t, timeMS: uint16(e.Time.Nanosecond() / int(time.Millisecond)), date: utcDate(t), received: received,
		hwid: e.HWID, userID: e.UserID, deviceType: uint8(e.DeviceType),
		language: e.Language, timezone: e.Timezone, country: e.Country,
		attrKeys: keys, attrValues: values, attributes: attrs, tags: tags,
	}
	if in := e.Inbound; in != nil {
		er.inFrom, er.inWAMID, er.inType, er.inText, er.inProfileName = in.From, in.WAMID, in.Type, in.Text, in.ProfileName
		er.phoneNumberID = in.PhoneNumberID
	}
	var sr *statusRow
	if st := e.Status; st != nil {
		if er.phoneNumberID == "" {
			er.phoneNumberID = st.PhoneNumberID
		}
		if e.Kind == schemas.KindStatus {
			code, err := int32Of("status.error_code", st.ErrorCode)
			if err != nil {
				return eventRow{}, nil, err
			}
			sr = &statusRow{
				app: e.App, wamid: st.WAMID, status: st.Status, recipient: st.Recipient,
				dispatchID: st.DispatchID, pricingCategory: st.PricingCategory, billable: boolUInt8(st.Billable),
				errorCode: code, errorTitle: st.ErrorTitle, time: t, date: er.date, eventID: e.ID,
			}
		}
	}
	return er, sr, nil
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
	return messageRow{
		dispatchID: o.DispatchID, app: o.App, channel: string(o.Channel), sender: o.Sender, recipient: o.To,
		country: o.Country, state: string(o.State), providerID: o.ProviderID, template: o.Template,
		category: o.Category, sourceKind: o.Source.Kind, sourceName: o.Source.Name, sourceEventID: o.Source.EventID,
		errorCode: code, errorMessage: o.ErrorMessage, attempts: uint16(o.Attempts),
		requested: requested, time: t, date: date,
	}, nil
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

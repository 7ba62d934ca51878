package segmenter

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// The segment API, Pushwoosh-compatible (/json/1.3, {"request":{...}} in,
// {"status_code":200,"status_message":"OK","response":{...}} out), served
// by the segmenter stage because it compiles filters with the segmenter's
// language before saving them:
//
//	POST /json/1.3/createFilter  {"application","name","filter_expression"} -> {"name"}
//	POST /json/1.3/listFilters   {"application"}                            -> {"filters":[{"name","filter_expression"}]}
//	POST /json/1.3/deleteFilter  {"application","name"}                     -> {"name"}
//	POST /json/1.3/createTargetedMessage  a campaign (see createTargetedMessage)  -> {"campaign","partitions"}
//	POST /json/1.3/previewTargetedMessage the same, counted, not sent               -> {"audience","sendable",...,"estimated_cost"}
//	POST /json/1.3/addTag        {"application","tag":{"name","type"}}      -> {"result":true}
//	POST /json/1.3/listTags      {"application"}                            -> {"tags":[{"name","type","type_name","declared"}]}
//	POST /json/1.3/deleteTag     {"application","tag":{"name"}}             -> {"result":true}
//
// Filters given to createFilter and createTargetedMessage (devices_filter)
// are checked against the app's tag registry (tagdefs.go): a T("tag", ...)
// naming a tag that no profile of the app has and that was not declared
// with addTag is refused with the column and the closest known name, and so
// is comparing a tag with a value of another type than its known one.
//
// The API token (header "Authorization: Token <api_token>" or
// request.auth) must belong to request.application. createFilter with an
// existing name replaces the segment. A saved segment is a SegmentDef on
// TopicSegments; the answer comes after Kafka acknowledged it, and every
// segmenter replica applies it from the topic (this one at once).
// Refusals are JSON naming the field, a bad filter with its column:
//
//	{"status_code":400,"status_message":"request.filter_expression: column 14: expected ',' ...","field":"request.filter_expression"}

// maxAPIBody bounds a segment API request body.
const maxAPIBody = 64 << 10

// APIHandler serves the segment API, authorizing calls with reg. The
// Segmenter must have been built by New (it produces with its client).
func (s *Segmenter) APIHandler(reg *apps.Registry) http.Handler {
	routes := map[string]func(context.Context, *apps.App, *apiRequest) (any, *apiError){
		"/json/1.3/createFilter":           s.createFilter,
		"/json/1.3/listFilters":            s.listFilters,
		"/json/1.3/deleteFilter":           s.deleteFilter,
		"/json/1.3/createTargetedMessage":  s.createTargetedMessage,
		"/json/1.3/previewTargetedMessage": s.previewTargetedMessage,
		"/json/1.3/addTag":                 s.addTag,
		"/json/1.3/listTags":               s.listTags,
		"/json/1.3/deleteTag":              s.deleteTag,
		"/json/1.3/createJourney":          s.createJourney,
		"/json/1.3/listJourneys":           s.listJourneys,
		"/json/1.3/getJourney":             s.getJourney,
		"/json/1.3/archiveJourney":         s.archiveJourney,
		"/json/1.3/startJourney":           s.startJourney,
	}
	mux := http.NewServeMux()
	for _, path := range APIPaths {
		mux.HandleFunc(path, s.api(reg, routes[path]))
	}
	return mux
}

// APIPaths are the routes APIHandler serves, for a server that shares its
// address with ingest.
var APIPaths = []string{
	"/json/1.3/createFilter", "/json/1.3/listFilters", "/json/1.3/deleteFilter",
	"/json/1.3/createTargetedMessage", "/json/1.3/previewTargetedMessage",
	"/json/1.3/addTag", "/json/1.3/listTags", "/json/1.3/deleteTag",
	"/json/1.3/createJourney", "/json/1.3/listJourneys", "/json/1.3/getJourney", "/json/1.3/archiveJourney", "/json/1.3/startJourney",
}

// apiRequest is the request object of the segment API.
type apiRequest struct {
	Application      string `json:"application"`
	Auth             string `json:"auth"`
	Name             string `json:"name"`
	FilterExpression string `json:"filter_expression"`
	// createTargetedMessage
	DevicesFilter        string            `json:"devices_filter"`
	Filter               string            `json:"filter"`
	Template             string            `json:"template"`
	Language             string            `json:"language"`
	Category             string            `json:"category"`
	ContentVariables     map[string]string `json:"content_variables"`
	HeaderVariables      map[string]string `json:"header_variables"`
	ButtonURLVariables   map[string]string `json:"button_url_variables"`
	SendDate             string            `json:"send_date"`
	UseRecipientTimezone bool              `json:"use_recipient_timezone"`
	FrequencyCap         *struct {
		Max    int    `json:"max"`
		Period string `json:"period"`
	} `json:"frequency_cap"`
	CampaignID string `json:"campaign_id"`
	// AllowOverTier sends a campaign whose users outside the service
	// window exceed the messaging tier's headroom (see checkTier).
	AllowOverTier bool `json:"allow_over_tier"`
	// addTag, deleteTag
	Tag *apiTag `json:"tag"`
	// the journey calls
	Journey *apiJourney `json:"journey"`
	ID      string      `json:"id"`
	Version int         `json:"version"`
	Devices []string    `json:"devices"`
	Users   []string    `json:"users"`
}

// apiTag is addTag's and deleteTag's tag: a name and, for addTag, a type
// as Pushwoosh's number (1 integer, 2 string, 3 list, 4 date, 5 boolean, 6
// decimal, 7 version) or name.
type apiTag struct {
	Name string          `json:"name"`
	Type json.RawMessage `json:"type"`
}

// apiError is a refusal: status, field, message.
type apiError struct {
	code  int
	field string
	msg   string
}

func refuse(code int, field, format string, args ...any) *apiError {
	return &apiError{code: code, field: field, msg: fmt.Sprintf(format, args...)}
}

// api decodes, authorizes and answers a call of the segment API.
func (s *Segmenter) api(reg *apps.Registry, h func(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, aerr := func() (any, *apiError) {
			if r.Method != http.MethodPost {
				w.Header().Set("Allow", http.MethodPost)
				return nil, refuse(http.StatusMethodNotAllowed, "", "%s is not allowed: use POST", r.Method)
			}
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					return nil, refuse(http.StatusRequestEntityTooLarge, "body", "is larger than the %d bytes limit", maxAPIBody)
				}
				return nil, refuse(http.StatusBadRequest, "body", "reading: %v", err)
			}
			if !utf8.Valid(body) {
				return nil, refuse(http.StatusBadRequest, "body", "is not valid UTF-8")
			}
			var env struct {
				Request *apiRequest `json:"request"`
			}
			if err := json.Unmarshal(body, &env); err != nil {
				return nil, refuse(http.StatusBadRequest, "body", "is not the JSON {\"request\":{...}}: %v", err)
			}
			if env.Request == nil {
				return nil, refuse(http.StatusBadRequest, "request", `is required: the body is {"request":{...}}`)
			}
			app, _, authErr := reg.Authorize(r.Header.Get("Authorization"), env.Request.Auth, env.Request.Application)
			if authErr != nil {
				return nil, refuse(authErr.Code, authErr.Field, "%s", authErr.Msg)
			}
			return h(r.Context(), app, env.Request)
		}()
		if aerr != nil {
			if aerr.code == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "5")
			}
			writeAPI(w, aerr.code, apiErrBody{StatusCode: aerr.code, StatusMessage: strings.TrimPrefix(aerr.field+": "+aerr.msg, ": "), Field: aerr.field})
			return
		}
		writeAPI(w, http.StatusOK, apiOKBody{StatusCode: 200, StatusMessage: "OK", Response: resp})
	}
}

// The Pushwoosh envelopes, in Pushwoosh's field order.
type apiOKBody struct {
	StatusCode    int    `json:"status_code"`
	StatusMessage string `json:"status_message"`
	Response      any    `json:"response"`
}

type apiErrBody struct {
	StatusCode    int    `json:"status_code"`
	StatusMessage string `json:"status_message"`
	Field         string `json:"field,omitempty"`
}

func writeAPI(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func checkName(name string) *apiError {
	switch {
	case name == "":
		return refuse(http.StatusBadRequest, "request.name", "is required: the segment's name")
	case len(name) > schemas.MaxSegmentName:
		return refuse(http.StatusBadRequest, "request.name", "is %d bytes long, at most %d are allowed", len(name), schemas.MaxSegmentName)
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return refuse(http.StatusBadRequest, "request.name", "contains control characters")
	}
	return nil
}

func (s *Segmenter) createFilter(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	if aerr := checkName(req.Name); aerr != nil {
		return nil, aerr
	}
	if req.FilterExpression == "" {
		return nil, refuse(http.StatusBadRequest, "request.filter_expression", `is required, e.g. T("City", EQ, "Oslo")`)
	}
	if aerr := s.checkTags(ctx, app.ID, "request.filter_expression", req.FilterExpression); aerr != nil {
		return nil, aerr
	}
	d := &schemas.SegmentDef{App: app.ID, Name: req.Name, Filter: req.FilterExpression, Updated: time.Now().UTC()}
	sg, err := compileSegment(d)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "request.filter_expression", "%v", err)
	}
	b, err := d.Marshal()
	if err != nil {
		return nil, refuse(http.StatusInternalServerError, "", "internal error")
	}
	if aerr := s.produceAcked(ctx, &kgo.Record{Topic: schemas.TopicSegments, Key: d.Key(), Value: b}); aerr != nil {
		return nil, aerr
	}
	s.segs.put(sg)
	if aerr := s.sweepSegment(ctx, d.App, d.Name, d.Filter, d.Updated); aerr != nil {
		return nil, aerr
	}
	return map[string]string{"name": d.Name}, nil
}

func (s *Segmenter) listFilters(_ context.Context, app *apps.App, _ *apiRequest) (any, *apiError) {
	type filter struct {
		Name             string `json:"name"`
		FilterExpression string `json:"filter_expression"`
	}
	out := []filter{}
	for _, d := range s.List(app.ID) {
		out = append(out, filter{d.Name, d.Filter})
	}
	return map[string]any{"filters": out}, nil
}

func (s *Segmenter) deleteFilter(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	if aerr := checkName(req.Name); aerr != nil {
		return nil, aerr
	}
	found := false
	for _, sg := range s.segs.of(app.ID) {
		found = found || sg.name == req.Name
	}
	if !found {
		return nil, refuse(http.StatusNotFound, "request.name", "no segment %q in application %q", req.Name, app.ID)
	}
	if aerr := s.produceAcked(ctx, &kgo.Record{Topic: schemas.TopicSegments, Key: schemas.SegmentKey(app.ID, req.Name)}); aerr != nil {
		return nil, aerr
	}
	s.segs.remove(app.ID, req.Name)
	if aerr := s.sweepSegment(ctx, app.ID, req.Name, "", time.Now().UTC()); aerr != nil {
		return nil, aerr
	}
	return map[string]string{"name": req.Name}, nil
}

// sweepSegment writes a sweep of the segment app/name to every partition:
// its owner evaluates filter (empty: the segment was deleted) over its
// profiles, so the segment's members are the profiles that match now, not
// only those with a later event. The sweep id is derived from the
// definition, so a retried call sweeps once more to the same effect.
func (s *Segmenter) sweepSegment(ctx context.Context, app, name, filter string, saved time.Time) *apiError {
	sum := sha256.Sum256([]byte(app + "|" + name + "|" + filter + "|" + saved.Format(time.RFC3339Nano)))
	id := "sweep-" + hex.EncodeToString(sum[:12])
	_, aerr := s.produceEveryPartition(ctx, func(p int32, now time.Time) *schemas.Event {
		return &schemas.Event{
			ID: id + "-p" + strconv.Itoa(int(p)), App: app, Kind: schemas.KindSweep, Name: "PW_SegmentSweep",
			Time: now, Received: now, Sweep: &schemas.Sweep{Segment: name, Filter: filter},
		}
	})
	if aerr != nil {
		s.log.Warn("kafka did not acknowledge a segment sweep", "app", app, "segment", name, "err", aerr.msg)
		aerr.msg = "the segment is saved, but Kafka did not acknowledge the evaluation of its existing members: save it again"
	}
	return aerr
}

// produceAcked writes an API record (a segment, tag or journey definition,
// or a tombstone) and waits for Kafka.
func (s *Segmenter) produceAcked(ctx context.Context, rec *kgo.Record) *apiError {
	if s.cl == nil {
		return refuse(http.StatusServiceUnavailable, "", "the segment API needs the segmenter's Kafka client")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		s.log.Warn("kafka did not acknowledge an API record", "topic", rec.Topic, "err", err)
		return refuse(http.StatusServiceUnavailable, "", "kafka did not acknowledge the %s record: retry", rec.Topic)
	}
	return nil
}

// createTargetedMessage starts a campaign (Pushwoosh createTargetedMessage):
//
//	{"request":{"application":"APP","name":"sushi-week",
//	  "devices_filter":"Event(\"OrderPlaced\", \"cuisine\", EQ, \"asian\")",  // or "filter":"<saved segment name>"
//	  "template":"sushi_promo","language":"en_US","category":"MARKETING",
//	  "content_variables":{"1":"{{tag:Name|there}}"},"header_variables":{"1":"..."},"button_url_variables":{"0":"..."},
//	  "send_date":"now",                  // or "YYYY-MM-DD HH:mm" UTC
//	  "use_recipient_timezone":false,     // true: send_date's time in each user's timezone
//	  "frequency_cap":{"max":2,"period":"7d"},  // optional: skip users who got 2 campaign messages in the 7 days before
//	  "campaign_id":"optional-own-id"}}   // a retry with the same id sends nothing new
//	-> {"campaign":"<id>","partitions":8}
//
// The campaign is one KindCampaign event per partition of TopicEvents: the
// segmenter owning a partition sends to its matching profiles, so a
// campaign scales with the segmenter replicas, and a crash re-runs a
// partition with the same dispatch ids. category defaults to MARKETING
// (users who opted out are skipped); variables may use {{tag:NAME}} and
// {{profile_name}} with a "|fallback". A future send time is kept by the
// dispatcher stage's scheduler.
func (s *Segmenter) createTargetedMessage(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	c, _, aerr := s.buildCampaign(ctx, app, req)
	if aerr != nil {
		return nil, aerr
	}
	ans := map[string]any{"campaign": c.ID}
	if app.Tier() != apps.TierUnlimited {
		outside, tr, aerr := s.checkTier(ctx, app, c, req.AllowOverTier)
		if aerr != nil {
			return nil, aerr
		}
		ans["outside_window"], ans["tier_headroom"] = outside, tr.Headroom
	}
	n, aerr := s.produceCampaign(ctx, app.ID, c)
	if aerr != nil {
		return nil, aerr
	}
	ans["partitions"] = n
	return ans, nil
}

// checkTier is createTargetedMessage's pre-flight check of an app with a
// messaging tier: it counts campaign c's audience (a preview of it, under
// its own id) and refuses the campaign when more of its sendable users are
// outside the service window than the tier has room for, unless allowOver
// (then the dispatchers send to the first ones up to the headroom and
// refuse the others with their tier code). It returns the users outside the
// window and the tier.
func (s *Segmenter) checkTier(ctx context.Context, app *apps.App, c *schemas.Campaign, allowOver bool) (int, tier, *apiError) {
	tr, aerr := s.headroom(ctx, app, time.Now())
	if aerr != nil {
		return 0, tr, aerr
	}
	pc := *c
	var b [16]byte
	_, _ = rand.Read(b[:])
	pc.ID, pc.Preview = "tier-"+hex.EncodeToString(b[:]), true
	total, _, _, aerr := s.countCampaign(ctx, app, &pc)
	if aerr != nil {
		return 0, tr, aerr
	}
	if total.OutsideWindow > tr.Headroom && !allowOver {
		return 0, tr, refuse(http.StatusBadRequest, "request.allow_over_tier",
			"the campaign reaches %d users outside the 24-hour service window; the messaging tier of %d has room for %d more in the next 24 h (%d used): narrow the audience, wait, or set allow_over_tier to send up to the headroom",
			total.OutsideWindow, tr.Limit, tr.Headroom, tr.Used)
	}
	return total.OutsideWindow, tr, nil
}

// buildCampaign checks a createTargetedMessage or previewTargetedMessage
// request and builds its campaign; categorySource says where its template
// category came from (see templateCategory).
func (s *Segmenter) buildCampaign(ctx context.Context, app *apps.App, req *apiRequest) (_ *schemas.Campaign, categorySource string, _ *apiError) {
	c := &schemas.Campaign{
		ID: req.CampaignID, Name: req.Name, Filter: req.DevicesFilter, Sender: app.Sender(),
		Template: schemas.Template{Name: req.Template, Language: req.Language},
	}
	switch {
	case c.Sender == "":
		return nil, "", refuse(http.StatusBadRequest, "request.application", "%q has no WhatsApp phone number id to send from", app.ID)
	case req.Template == "":
		return nil, "", refuse(http.StatusBadRequest, "request.template", "is required: the name of an approved template")
	case req.DevicesFilter != "" && req.Filter != "":
		return nil, "", refuse(http.StatusBadRequest, "request.filter", "give devices_filter or filter (a saved segment), not both")
	case req.Filter != "":
		for _, sg := range s.segs.of(app.ID) {
			if sg.name == req.Filter {
				c.Filter = sg.src
			}
		}
		if c.Filter == "" {
			return nil, "", refuse(http.StatusNotFound, "request.filter", "no segment %q in application %q", req.Filter, app.ID)
		}
	case c.Filter == "":
		return nil, "", refuse(http.StatusBadRequest, "request.devices_filter", `is required (or filter, a saved segment), e.g. T("City", EQ, "Oslo")`)
	}
	if c.Template.Language == "" {
		c.Template.Language = DefaultLanguage
	}
	var aerr *apiError
	if c.Template.Category, categorySource, aerr = templateCategory(req); aerr != nil {
		return nil, "", aerr
	}
	if c.Template.Body, aerr = variables("request.content_variables", req.ContentVariables, 1); aerr != nil {
		return nil, "", aerr
	}
	if c.Template.Header, aerr = variables("request.header_variables", req.HeaderVariables, 1); aerr != nil {
		return nil, "", aerr
	}
	buttons, aerr := variables("request.button_url_variables", req.ButtonURLVariables, 0)
	if aerr != nil {
		return nil, "", aerr
	}
	for i, v := range buttons {
		if c.Template.ButtonURL == nil {
			c.Template.ButtonURL = make(map[int]string)
		}
		c.Template.ButtonURL[i] = v
	}
	switch req.SendDate {
	case "", "now":
		if req.UseRecipientTimezone {
			return nil, "", refuse(http.StatusBadRequest, "request.send_date", `use_recipient_timezone needs a "YYYY-MM-DD HH:mm" send_date`)
		}
	default:
		at, err := time.Parse("2006-01-02 15:04", req.SendDate)
		if err != nil {
			return nil, "", refuse(http.StatusBadRequest, "request.send_date", `%q is not "now" or "YYYY-MM-DD HH:mm" (UTC)`, req.SendDate)
		}
		if at.After(time.Now().Add(schemas.MaxScheduleAhead)) {
			return nil, "", refuse(http.StatusBadRequest, "request.send_date", "is more than %s ahead", schemas.MaxScheduleAhead)
		}
		c.SendAt = at.UTC()
		if req.UseRecipientTimezone {
			c.LocalTime = at.Format("15:04")
			c.SendAt = time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC)
		}
	}
	if fc := req.FrequencyCap; fc != nil {
		if fc.Max < 1 || fc.Max > schemas.MaxFrequencyCap {
			return nil, "", refuse(http.StatusBadRequest, "request.frequency_cap.max", "is %d: give 1 to %d messages", fc.Max, schemas.MaxFrequencyCap)
		}
		period, ok := parsePeriod(fc.Period)
		if !ok {
			return nil, "", refuse(http.StatusBadRequest, "request.frequency_cap.period", `%q is not a period such as "7d", "2w" or "36h"`, fc.Period)
		}
		c.FrequencyCap = &schemas.FrequencyCap{Max: fc.Max, PeriodSeconds: int64(period / time.Second)}
	}
	if c.ID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		c.ID = hex.EncodeToString(b[:])
	} else if len(c.ID) > 128 || strings.ContainsAny(c.ID, "|\x00") {
		return nil, "", refuse(http.StatusBadRequest, "request.campaign_id", "must be at most 128 bytes without '|'")
	}
	if _, err := compileCampaign(app.ID, c); err != nil {
		return nil, "", refuse(http.StatusBadRequest, "request.devices_filter", "%v", err)
	}
	if req.DevicesFilter != "" {
		if aerr := s.checkTags(ctx, app.ID, "request.devices_filter", c.Filter); aerr != nil {
			return nil, "", aerr
		}
	}
	tcat, aerr := s.checkTemplate(ctx, app, c)
	if aerr != nil {
		return nil, "", aerr
	}
	if categorySource, aerr = templateCategoryOf(c, tcat, categorySource); aerr != nil {
		return nil, "", aerr
	}
	return c, categorySource, nil
}

// checkTags compiles a filter against the app's tag registry, refusing one
// that names a tag the app does not have or compares a tag with a value of
// another type; 503 until the registry has been read.
func (s *Segmenter) checkTags(ctx context.Context, app, field, src string) *apiError {
	if aerr := viewReady(ctx, s.tagReg.ready, "the tag registry is still loading: retry"); aerr != nil {
		return aerr
	}
	if _, err := CompileChecked(app, src, s.tagTypes(app)); err != nil {
		return refuse(http.StatusBadRequest, field, "%v", err)
	}
	return nil
}

// parsePeriod parses a positive period: a whole number of days ("7d") or
// weeks ("2w"), or a Go duration of at least a second ("36h", "90m").
func parsePeriod(s string) (time.Duration, bool) {
	if n := len(s); n > 1 && (s[n-1] == 'd' || s[n-1] == 'w') {
		v, err := strconv.Atoi(s[:n-1])
		if err != nil || v < 1 || v > 3660 {
			return 0, false
		}
		unit := 24 * time.Hour
		if s[n-1] == 'w' {
			unit *= 7
		}
		return time.Duration(v) * unit, true
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d >= time.Second
}

// previewWait bounds how long previewTargetedMessage waits for every
// partition's count.
const previewWait = 15 * time.Second

// previewTargetedMessage counts a campaign's audience without sending (the
// request of createTargetedMessage; campaign_id is ignored) and estimates
// what Meta will charge for it:
//
//	-> {"audience":120,"sendable":100,"opted_out":15,"no_whatsapp":3,"unregistered":2,"empty_param":0,
//	    "outside_window":97,"by_country":{"IN":60,"BR":40},"partitions":8,
//	    "category_source":"request",
//	    "estimated_cost":{"currency":"USD","total":3.208,"rules":"2025-07","rate_card":"...",
//	      "lines":[{"category":"MARKETING","country":"BR","market":"Brazil","count":40,"billable":40,"rate":0.0625,"amount":2.5}, ...]}}
//
// Every partition's owner counts its profiles (a KindCampaign event with
// Preview set) and writes its part to TopicPreviews; the answer sums them,
// or is 503 when not every partition answered within 15 s. The cost is the
// rate card's (Config.Pricing) for the template's category, by country,
// each user in or out of the 24-hour service window when the message is
// due; category_source is "request" when request.category named the
// category and "assumed_marketing" when it did not (MARKETING, the dearest,
// is estimated). Amounts are exact decimals of the card's currency; the
// figures are estimates (internal/pricing). tier is the app's
// whatsapp.messaging_tier (a number, or "unlimited"), tier_used the unique
// recipients outside the service window the dispatchers reached for its
// business in the last 24 h (their claims on TopicReach, read by every
// segmenter), and tier_headroom what is left (or "unlimited"):
//
//	"tier":250,"tier_used":40,"tier_headroom":210
//
// A campaign whose outside_window exceeds tier_headroom is refused by
// createTargetedMessage unless it sets allow_over_tier.
func (s *Segmenter) previewTargetedMessage(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	req.CampaignID = ""
	c, categorySource, aerr := s.buildCampaign(ctx, app, req)
	if aerr != nil {
		return nil, aerr
	}
	tr, aerr := s.headroom(ctx, app, time.Now())
	if aerr != nil {
		return nil, aerr
	}
	c.Preview = true
	total, parts, n, aerr := s.countCampaign(ctx, app, c)
	if aerr != nil {
		return nil, aerr
	}
	cost, err := s.prices.Estimate(previewCounts(parts, c.Template.Category))
	if err != nil {
		s.log.Error("estimating the cost of a campaign preview", "app", app.ID, "campaign", c.ID, "err", err)
		return nil, refuse(http.StatusInternalServerError, "", "estimating the cost: %v", err)
	}
	return map[string]any{
		"audience": total.Matched, "sendable": total.Sendable, "opted_out": total.OptedOut,
		"no_whatsapp": total.NoWhatsApp, "unregistered": total.Unregistered, "empty_param": total.EmptyParam,
		"frequency_cap": total.FrequencyCap, "quiet_hours": total.QuietHours, "deferred": total.Deferred,
		"outside_window": total.OutsideWindow, "by_country": total.ByCountry, "partitions": n,
		"category_source": categorySource, "estimated_cost": cost,
		"tier": tierValue(tr), "tier_used": tr.Used, "tier_headroom": headroomValue(tr),
	}, nil
}

// tierValue is the preview's "tier": the number, or "unlimited".
func tierValue(t tier) any {
	if t.Limit == apps.TierUnlimited {
		return "unlimited"
	}
	return t.Limit
}

// headroomValue is the preview's "tier_headroom": the number, or
// "unlimited".
func headroomValue(t tier) any {
	if t.Headroom < 0 {
		return "unlimited"
	}
	return t.Headroom
}

// countCampaign runs preview campaign c (Preview set) on every partition
// and returns the sum of the partitions' counts, the parts, and the number
// of partitions; 503 when not every partition answered within previewWait.
func (s *Segmenter) countCampaign(ctx context.Context, app *apps.App, c *schemas.Campaign) (*schemas.CampaignPreview, map[int32]*schemas.CampaignPreview, int, *apiError) {
	cl, err := s.campaignClient()
	if err != nil {
		return nil, nil, 0, refuse(http.StatusServiceUnavailable, "", "cannot reach Kafka: retry")
	}
	// Read the answers from the end of partition 0 as it is now.
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ends, err := kadm.NewClient(cl).ListEndOffsets(lctx, schemas.TopicPreviews)
	cancel()
	if err == nil {
		err = ends.Error()
	}
	end, ok := ends.Lookup(schemas.TopicPreviews, 0)
	if err != nil || !ok {
		return nil, nil, 0, refuse(http.StatusServiceUnavailable, "", "kafka did not answer: retry")
	}
	rd, err := kgo.NewClient(append(s.kcfg.Opts(s.log),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicPreviews: {0: kgo.NewOffset().At(end.Offset)}}),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		return nil, nil, 0, refuse(http.StatusServiceUnavailable, "", "cannot reach Kafka: retry")
	}
	defer rd.Close()
	n, aerr := s.produceCampaign(ctx, app.ID, c)
	if aerr != nil {
		return nil, nil, 0, aerr
	}
	wctx, cancel := context.WithTimeout(ctx, previewWait)
	defer cancel()
	parts := make(map[int32]*schemas.CampaignPreview, n)
	for len(parts) < n {
		fs := rd.PollFetches(wctx)
		if wctx.Err() != nil {
			return nil, nil, 0, refuse(http.StatusServiceUnavailable, "", "%d of %d partitions answered within %s: are the segmenters running? retry", len(parts), n, previewWait)
		}
		fs.EachRecord(func(r *kgo.Record) {
			pv, err := schemas.DecodeCampaignPreview(r.Value)
			if err == nil && pv.App == app.ID && pv.Campaign == c.ID {
				parts[pv.Partition] = pv
			}
		})
	}
	total := &schemas.CampaignPreview{ByCountry: map[string]int{}}
	for _, pv := range parts {
		total.Matched += pv.Matched
		total.Sendable += pv.Sendable
		total.OptedOut += pv.OptedOut
		total.NoWhatsApp += pv.NoWhatsApp
		total.Unregistered += pv.Unregistered
		total.EmptyParam += pv.EmptyParam
		total.FrequencyCap += pv.FrequencyCap
		total.QuietHours += pv.QuietHours
		total.Deferred += pv.Deferred
		total.OutsideWindow += pv.OutsideWindow
		for k, v := range pv.ByCountry {
			total.ByCountry[k] += v
		}
	}
	return total, parts, n, nil
}

// variables orders a Pushwoosh variables object ({"1":"a","2":"b"}, keys
// counted from first) into a list without gaps.
func variables(field string, m map[string]string, first int) ([]string, *apiError) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make([]string, len(m))
	for k, v := range m {
		i, err := strconv.Atoi(k)
		if err != nil || i < first || i-first >= len(m) {
			return nil, refuse(http.StatusBadRequest, field+"."+k, "keys are %d to %d without gaps", first, first+len(m)-1)
		}
		if v == "" {
			return nil, refuse(http.StatusBadRequest, field+"."+k, "is empty (Meta refuses empty parameters)")
		}
		out[i-first] = v
	}
	return out, nil
}

// produceCampaign writes one KindCampaign event per partition of
// TopicEvents and returns how many.
func (s *Segmenter) produceCampaign(ctx context.Context, app string, c *schemas.Campaign) (int, *apiError) {
	n, aerr := s.produceEveryPartition(ctx, func(p int32, now time.Time) *schemas.Event {
		return &schemas.Event{
			ID: c.ID + "-p" + strconv.Itoa(int(p)), App: app, Kind: schemas.KindCampaign, Name: "PW_CampaignRun",
			Time: now, Received: now, Campaign: c,
		}
	})
	if aerr != nil {
		s.log.Warn("kafka did not acknowledge a campaign", "campaign", c.ID, "err", aerr.msg)
		aerr.msg = "kafka did not acknowledge the campaign: retry with the same campaign_id"
	}
	return n, aerr
}

// produceEveryPartition writes the event build makes for each partition of
// TopicEvents to that partition, and returns how many it wrote.
func (s *Segmenter) produceEveryPartition(ctx context.Context, build func(p int32, now time.Time) *schemas.Event) (int, *apiError) {
	cl, err := s.campaignClient()
	if err != nil {
		s.log.Error("creating the partition producer", "err", err)
		return 0, refuse(http.StatusServiceUnavailable, "", "cannot reach Kafka: retry")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tds, err := kadm.NewClient(cl).ListTopics(ctx, schemas.TopicEvents)
	if err == nil {
		err = tds.Error()
	}
	if err != nil {
		s.log.Warn("listing the events topic", "err", err)
		return 0, refuse(http.StatusServiceUnavailable, "", "kafka did not answer: retry")
	}
	parts := tds[schemas.TopicEvents].Partitions.Numbers()
	now := time.Now().UTC()
	recs := make([]*kgo.Record, 0, len(parts))
	for _, p := range parts {
		e := build(p, now)
		b, err := e.Marshal()
		if err != nil {
			return 0, refuse(http.StatusInternalServerError, "", "internal error")
		}
		recs = append(recs, &kgo.Record{Topic: schemas.TopicEvents, Partition: p, Key: e.Key(), Value: b})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return 0, refuse(http.StatusServiceUnavailable, "", "%v", err)
	}
	return len(recs), nil
}

// campaignClient is the producer of campaign records, which name their
// partition; built on first use.
func (s *Segmenter) campaignClient() (*kgo.Client, error) {
	s.campOnce.Do(func() {
		s.campCl, s.campErr = kgo.NewClient(append(s.kcfg.Opts(s.log), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	})
	return s.campCl, s.campErr
}

package segmenter

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// The journey API, Pushwoosh-style like the segment API:
//
//	POST /json/1.3/createJourney   {"application","journey":{id, name, entry, goal, reentry, frequency_cap, quiet_hours, steps}}
//	                               -> {"id","version"}   (a journey saved again gets the next version)
//	POST /json/1.3/listJourneys    {"application"} -> {"journeys":[{"id","name","version","archived"}]}
//	POST /json/1.3/getJourney      {"application","id"[,"version"]} -> the definition
//	POST /json/1.3/archiveJourney  {"application","id"} -> {"id","version"}   (no new entries; users in it finish)
//	POST /json/1.3/startJourney    {"application","id","devices":["hwid",...],"users":["user id",...]} -> {"started":n}
//
// A definition is compiled before it is saved: unknown step types or
// channels, dangling or missing edges, unreachable steps, cycles without a
// wait, A/B splits not summing to 100, bad durations and filters are
// refused with the step and field; WhatsApp templates are checked against
// the app's templates like a campaign's.

// apiJourney is the request's journey: a definition without the fields
// the API sets.
type apiJourney struct {
	ID           string                `json:"id"`
	Name         string                `json:"name"`
	Entry        schemas.JourneyEntry  `json:"entry"`
	Goal         *schemas.JourneyGoal  `json:"goal"`
	Reentry      string                `json:"reentry"`
	FrequencyCap *schemas.FrequencyCap `json:"frequency_cap"`
	QuietHours   *schemas.QuietHours   `json:"quiet_hours"`
	Steps        []schemas.JourneyStep `json:"steps"`
}

func (s *Segmenter) journeysReady(ctx context.Context) *apiError {
	return viewReady(ctx, s.journeys.ready, "the journeys are still loading: retry")
}

func (s *Segmenter) createJourney(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	in := req.Journey
	if in == nil {
		return nil, refuse(http.StatusBadRequest, "request.journey", "is required: {id, entry, steps, ...}")
	}
	if aerr := s.journeysReady(ctx); aerr != nil {
		return nil, aerr
	}
	if in.ID == "" || len(in.ID) > 128 {
		return nil, refuse(http.StatusBadRequest, "request.journey.id", "must be 1 to 128 bytes")
	}
	version := 1
	if prev := s.journeys.latest(app.ID, in.ID); prev != nil {
		version = prev.def.Version + 1
	}
	d := &schemas.JourneyDef{
		App: app.ID, ID: in.ID, Version: version, Name: in.Name, Entry: in.Entry, Goal: in.Goal,
		Reentry: in.Reentry, FrequencyCap: in.FrequencyCap, QuietHours: in.QuietHours, Steps: in.Steps,
		Sender: app.Sender(), Updated: time.Now().UTC(),
	}
	if _, err := compileJourney(d); err != nil {
		return nil, refuse(http.StatusBadRequest, "request.journey", "%v", err)
	}
	for i, st := range d.Steps {
		if st.Type == schemas.StepWebhook && app.Webhooks.Secret == "" {
			return nil, refuse(http.StatusBadRequest, fmt.Sprintf("request.journey.steps[%d].type", i),
				"is webhook, but application %q has no webhooks.secret to sign the calls", app.ID)
		}
		if st.Type != schemas.StepSend {
			continue
		}
		field := fmt.Sprintf("request.journey.steps[%d].channel", i)
		switch {
		case st.Channel == schemas.ChannelEmail && !app.Email.Enabled():
			return nil, refuse(http.StatusBadRequest, field, "is email, but application %q has no email settings", app.ID)
		case st.Channel == schemas.ChannelPush && !app.Push.Enabled():
			return nil, refuse(http.StatusBadRequest, field, "is push, but application %q has no push (FCM) settings", app.ID)
		case st.Channel == schemas.ChannelWhatsApp && app.Sender() == "":
			return nil, refuse(http.StatusBadRequest, field, "is whatsapp, but application %q has no WhatsApp phone number id", app.ID)
		}
		if st.Template == nil {
			continue
		}
		c := &schemas.Campaign{Template: *st.Template}
		cat, aerr := s.checkTemplate(ctx, app, c)
		if aerr != nil {
			aerr.field = fmt.Sprintf("request.journey.steps[%d].template", i)
			return nil, aerr
		}
		if cat != "" && st.Template.Category != "" && st.Template.Category != cat {
			return nil, refuse(http.StatusBadRequest, fmt.Sprintf("request.journey.steps[%d].template.category", i),
				"is %s, but template %q is %s", st.Template.Category, st.Template.Name, cat)
		}
		if cat != "" {
			d.Steps[i].Template.Category = cat
		}
	}
	j, err := compileJourney(d) // again, with the templates' categories
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "request.journey", "%v", err)
	}
	if aerr := s.produceJourney(ctx, d); aerr != nil {
		return nil, aerr
	}
	s.journeys.put(j)
	return map[string]any{"id": d.ID, "version": d.Version}, nil
}

// produceJourney writes a journey version and waits for Kafka.
func (s *Segmenter) produceJourney(ctx context.Context, d *schemas.JourneyDef) *apiError {
	b, err := d.Marshal()
	if err != nil {
		return refuse(http.StatusInternalServerError, "", "internal error")
	}
	return s.produceAcked(ctx, &kgo.Record{Topic: schemas.TopicJourneys, Key: d.Key(), Value: b})
}

func (s *Segmenter) listJourneys(ctx context.Context, app *apps.App, _ *apiRequest) (any, *apiError) {
	if aerr := s.journeysReady(ctx); aerr != nil {
		return nil, aerr
	}
	type item struct {
		ID       string `json:"id"`
		Name     string `json:"name,omitempty"`
		Version  int    `json:"version"`
		Archived bool   `json:"archived"`
	}
	out := []item{}
	s.journeys.mu.RLock()
	for _, vs := range s.journeys.byHash {
		for i := len(vs) - 1; i >= 0; i-- {
			if j := vs[i]; j != nil {
				if j.def.App == app.ID {
					out = append(out, item{j.def.ID, j.def.Name, j.def.Version, j.def.Archived})
				}
				break
			}
		}
	}
	s.journeys.mu.RUnlock()
	sortBy(out, func(a item) string { return a.ID })
	return map[string]any{"journeys": out}, nil
}

func (s *Segmenter) getJourney(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	if aerr := s.journeysReady(ctx); aerr != nil {
		return nil, aerr
	}
	j, aerr := s.journeyOf(app, req.ID, req.Version)
	if aerr != nil {
		return nil, aerr
	}
	return j.def, nil
}

// journeyOf returns version v (0: the latest) of app's journey id.
func (s *Segmenter) journeyOf(app *apps.App, id string, v int) (*journey, *apiError) {
	if id == "" {
		return nil, refuse(http.StatusBadRequest, "request.id", "is required: the journey's id")
	}
	j := s.journeys.latest(app.ID, id)
	if j != nil && v != 0 {
		j = s.journeys.version(journeyHash(app.ID, id), v)
	}
	if j == nil {
		return nil, refuse(http.StatusNotFound, "request.id", "no journey %q (version %d) in application %q", id, v, app.ID)
	}
	return j, nil
}

func (s *Segmenter) archiveJourney(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	if aerr := s.journeysReady(ctx); aerr != nil {
		return nil, aerr
	}
	j, aerr := s.journeyOf(app, req.ID, 0)
	if aerr != nil {
		return nil, aerr
	}
	if j.def.Archived {
		return map[string]any{"id": j.def.ID, "version": j.def.Version}, nil
	}
	d := *j.def
	d.Version, d.Archived, d.Updated = d.Version+1, true, time.Now().UTC()
	nj, err := compileJourney(&d)
	if err != nil {
		return nil, refuse(http.StatusInternalServerError, "", "internal error")
	}
	if aerr := s.produceJourney(ctx, &d); aerr != nil {
		return nil, aerr
	}
	s.journeys.put(nj)
	return map[string]any{"id": d.ID, "version": d.Version}, nil
}

// maxStart bounds the users of one startJourney call.
const maxStart = 1000

func (s *Segmenter) startJourney(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	if aerr := s.journeysReady(ctx); aerr != nil {
		return nil, aerr
	}
	jr := req
	j, aerr := s.journeyOf(app, req.ID, 0)
	if aerr != nil {
		return nil, aerr
	}
	switch {
	case j.def.Archived:
		return nil, refuse(http.StatusConflict, "request.id", "journey %q is archived", j.def.ID)
	case !j.def.Entry.API:
		return nil, refuse(http.StatusBadRequest, "request.id", "journey %q is not entered through the API (its entry has no \"api\": true)", j.def.ID)
	case len(jr.Devices)+len(jr.Users) == 0:
		return nil, refuse(http.StatusBadRequest, "request.devices", "give devices (hwids) or users (user ids)")
	case len(jr.Devices)+len(jr.Users) > maxStart:
		return nil, refuse(http.StatusBadRequest, "request.devices", "at most %d users per call", maxStart)
	}
	now := time.Now().UTC()
	var recs []*kgo.Record
	add := func(field string, i int, hwid, user string) *apiError {
		if hwid == "" && user == "" {
			return refuse(http.StatusBadRequest, field+"["+strconv.Itoa(i)+"]", "is empty")
		}
		e := &schemas.Event{
			ID:  fmt.Sprintf("journey-start-%s-%d-%s%s-%d", j.def.ID, j.def.Version, hwid, user, now.UnixNano()),
			App: app.ID, Kind: schemas.KindEvent, Name: schemas.EventJourneyStart, Time: now, Received: now, HWID: hwid, UserID: user,
			Attributes: map[string]any{"journey": j.def.ID},
		}
		b, err := e.Marshal()
		if err != nil {
			return refuse(http.StatusInternalServerError, "", "internal error")
		}
		recs = append(recs, &kgo.Record{Topic: schemas.TopicEvents, Key: e.Key(), Value: b})
		return nil
	}
	for i, h := range jr.Devices {
		if aerr := add("request.devices", i, h, ""); aerr != nil {
			return nil, aerr
		}
	}
	for i, u := range jr.Users {
		if aerr := add("request.users", i, "", u); aerr != nil {
			return nil, aerr
		}
	}
	if s.cl == nil {
		return nil, refuse(http.StatusServiceUnavailable, "", "the journey API needs the segmenter's Kafka client")
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.cl.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		return nil, refuse(http.StatusServiceUnavailable, "", "kafka did not acknowledge the start: retry")
	}
	return map[string]any{"started": len(recs)}, nil
}

// sortBy sorts l by key.
func sortBy[T any](l []T, key func(T) string) {
	slices.SortFunc(l, func(a, b T) int { return strings.Compare(key(a), key(b)) })
}

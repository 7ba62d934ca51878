package segmenter

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// SourceCampaign is the Source.Kind of campaign sends.
const SourceCampaign = "campaign"

// SourceJourney is the Source.Kind of the segmenter's journey sends.
const SourceJourney = "journey"

// Campaign skip reasons (herald_segmenter_campaign_skipped_total).
const (
	skipNoWhatsApp   = "no_whatsapp"
	skipUnregistered = "unregistered"
	skipEvicted      = "evicted"
	skipFrequencyCap = "frequency_cap"
	skipCampaignCap  = "campaign_cap" // the campaign's own Campaign.FrequencyCap
	skipQuietHours   = "quiet_hours"
)

// campaignValidity is how long a campaign send stays valid after its send
// time: the dispatcher reports it expired after that.
const campaignValidity = 24 * time.Hour

// compiledCampaign is a campaign ready to run.
type compiledCampaign struct {
	c       *schemas.Campaign
	f       *Filter
	body    []param
	header  []param
	button  map[int]param
	local   bool
	hh, mm  int
	srcName string
}

// compileCampaign checks a campaign and compiles its filter and parameters.
func compileCampaign(app string, c *schemas.Campaign) (*compiledCampaign, error) {
	f, err := Compile(app, c.Filter)
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	cc := &compiledCampaign{c: c, f: f, srcName: c.Name}
	if cc.srcName == "" {
		cc.srcName = c.ID
	}
	for i, s := range c.Template.Body {
		p, err := parseParam(s)
		if err != nil {
			return nil, fmt.Errorf("template.body[%d]: %w", i, err)
		}
		cc.body = append(cc.body, p)
	}
	for i, s := range c.Template.Header {
		p, err := parseParam(s)
		if err != nil {
			return nil, fmt.Errorf("template.header[%d]: %w", i, err)
		}
		cc.header = append(cc.header, p)
	}
	for i, s := range c.Template.ButtonURL {
		p, err := parseParam(s)
		if err != nil {
			return nil, fmt.Errorf("template.button_url[%d]: %w", i, err)
		}
		if cc.button == nil {
			cc.button = make(map[int]param)
		}
		cc.button[i] = p
	}
	if c.LocalTime != "" {
		t, err := time.Parse("15:04", c.LocalTime)
		if err != nil {
			return nil, fmt.Errorf("local_time %q is not HH:mm", c.LocalTime)
		}
		cc.local, cc.hh, cc.mm = true, t.Hour(), t.Minute()
	}
	return cc, nil
}

// expandAll expands ps for p; ok is false when one comes out empty.
func expandAll(ps []param, p *Profile) ([]string, bool) {
	if len(ps) == 0 {
		return nil, true
	}
	out := make([]string, len(ps))
	for i, pp := range ps {
		v, ok := pp.expand("", p)
		if !ok {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// sendAt is when p gets the campaign: SendAt, or LocalTime of SendAt's
// date in p's timezone; zero for now.
func (cc *compiledCampaign) sendAt(p *Profile) time.Time {
	if !cc.local {
		return cc.c.SendAt
	}
	loc := time.UTC
	if p.Timezone != "" {
		if l, err := loadLocation(p.Timezone); err == nil {
			loc = l
		}
	}
	y, m, d := cc.c.SendAt.Date()
	return time.Date(y, m, d, cc.hh, cc.mm, 0, 0, loc).UTC()
}

// loadLocation resolves an IANA name or a "+05:30" offset (ingest stores
// either).
func loadLocation(tz string) (*time.Location, error) {
	if len(tz) == 6 && (tz[0] == '+' || tz[0] == '-') && tz[3] == ':' {
		t, err := time.Parse("-07:00", tz)
		if err != nil {
			return nil, err
		}
		_, off := t.Zone()
		return time.FixedZone(tz, off), nil
	}
	return time.LoadLocation(tz)
}

// runCampaign sends campaign event e to the matching users of the profiles
// of rec's partition: one dispatch request each, with an id derived from
// the campaign and the profile key, so a redelivered campaign record
// produces the same requests. A bad campaign is dead-lettered.
func (s *Segmenter) runCampaign(out []*kgo.Record, rec *kgo.Record, e *schemas.Event, now time.Time) []*kgo.Record {
	cc, err := compileCampaign(e.App, e.Campaign)
	if err != nil {
		return s.deadLetter(out, rec, fmt.Sprintf("campaign %s: %v", e.Campaign.ID, err))
	}
	s.m.events[e.Kind].Inc()
	prefix := []byte(e.App + "|")
	var sent int
	skipped := map[string]int{}
	var pv *schemas.CampaignPreview
	if cc.c.Preview {
		pv = &schemas.CampaignPreview{
			App: e.App, Campaign: cc.c.ID, Partition: rec.Partition, Category: cc.c.Template.Category,
			ByCountry: map[string]int{}, OutsideByCountry: map[string]int{}, Time: now,
		}
	}
	missing, err := s.eachProfile(s.batchCtx, rec.Partition, e.App, func(key []byte, p *Profile) {
		out = s.flushPart(out)
		if !cc.f.Match(p, now) {
			return
		}
		d, skip := s.campaignRequest(cc, e, key[len(prefix):], p, now)
		var deferred, counted bool
		if d != nil {
			skip, deferred, counted = s.limit(cc, d, p, now, pv == nil)
			if skip != "" {
				d = nil
			}
		}
		if pv != nil {
			countPreview(pv, d, skip, p, now)
			if deferred {
				pv.Deferred++
			}
			return
		}
		if d == nil {
			skipped[skip]++
			return
		}
		if counted {
			// The send is part of the profile (the cap counts it): saved
			// and in the changelog with the batch.
			if err := s.save(key, p); err != nil {
				s.revert(key, p)
				skipped[skipProfileFull]++
				return
			}
			s.noteChanged(key, rec.Partition, identity(e.App, key[len(prefix):]), p, false)
		}
		b, err := d.Marshal()
		if err != nil {
			skipped["encoding"]++
			return
		}
		out = append(out, &kgo.Record{Topic: schemas.TopicDispatch, Key: d.Key(), Value: b})
		sent++
	})
	if err != nil {
		s.coldErr = fmt.Errorf("campaign %s: %w", cc.c.ID, err)
		return out
	}
	if missing > 0 {
		skipped[skipEvicted] += missing
	}
	if pv != nil {
		b, err := pv.Marshal()
		if err != nil {
			return s.deadLetter(out, rec, fmt.Sprintf("encoding the preview of campaign %s: %v", cc.c.ID, err))
		}
		s.log.Info("campaign preview on partition", "app", e.App, "campaign", cc.c.ID, "partition", rec.Partition, "matched", pv.Matched, "sendable", pv.Sendable)
		return append(out, &kgo.Record{Topic: schemas.TopicPreviews, Partition: 0, Key: e.Key(), Value: b})
	}
	s.m.dispatch.WithLabelValues(SourceCampaign).Add(float64(sent))
	for reason, n := range skipped {
		s.m.campaignSkipped.WithLabelValues(reason).Add(float64(n))
	}
	s.log.Info("campaign run on partition", "app", e.App, "campaign", cc.c.ID, "partition", rec.Partition,
		"profiles", s.keys.count(rec.Partition), "requests", sent, "skipped", skipped)
	return out
}

// countPreview adds a matching profile to pv: its request d, or the reason
// it has none. Whether the user is in the service window is judged when
// the message is due (a deferred or scheduled one may find it closed): a
// utility template is free in it.
func countPreview(pv *schemas.CampaignPreview, d *schemas.DispatchRequest, skip string, p *Profile, now time.Time) {
	pv.Matched++
	switch skip {
	case "":
		pv.Sendable++
		pv.ByCountry[d.Country]++
		due := now
		if d.SendAt.After(now) {
			due = d.SendAt
		}
		if !p.InServiceWindow(due) {
			pv.OutsideWindow++
			pv.OutsideByCountry[d.Country]++
		}
	case skipOptedOut:
		pv.OptedOut++
	case skipNoWhatsApp:
		pv.NoWhatsApp++
	case skipUnregistered:
		pv.Unregistered++
	case skipEmptyParam:
		pv.EmptyParam++
	case skipFrequencyCap, skipCampaignCap:
		pv.FrequencyCap++
	case skipQuietHours:
		pv.QuietHours++
	}
}

// identity is an event naming the user of profile key id (the key without
// the app): what the tags record of the profile is keyed by.
func identity(app string, id []byte) *schemas.Event {
	e := &schemas.Event{App: app}
	switch {
	case bytes.HasPrefix(id, []byte("user:")):
		e.UserID = string(id[len("user:"):])
	case bytes.HasPrefix(id, []byte("anon:")):
		e.AnonymousID = string(id[len("anon:"):])
	default:
		e.HWID = string(id)
	}
	return e
}

// limit applies the quiet hours and the frequency caps (Config.Limits,
// and the campaign's own Campaign.FrequencyCap) to d, a campaign message for
// p. It returns the skip reason, whether d was
// deferred to the end of the quiet hours, and whether the send was counted
// in p (record set and not counted before: p then needs saving). A re-run
// of a campaign that counted p already sends again (same id) without
// counting twice.
func (s *Segmenter) limit(cc *compiledCampaign, d *schemas.DispatchRequest, p *Profile, now time.Time, record bool) (skip string, deferred, counted bool) {
	l := &s.cfg.Limits
	at := now
	if !d.SendAt.IsZero() {
		at = d.SendAt
	}
	// Quiet hours hold every campaign message but authentication codes,
	// which are useless late.
	if d.Template.Category != CategoryAuthentication {
		loc := time.UTC
		if p.Timezone != "" {
			if ll, err := loadLocation(p.Timezone); err == nil {
				loc = ll
			}
		}
		if end, quiet := l.quietUntil(at, loc); quiet {
			if l.QuietPolicy == QuietDrop {
				return skipQuietHours, false, false
			}
			at, deferred = end, true
			d.SendAt, d.Deadline = end, end.Add(campaignValidity)
		}
	}
	marketing := d.Template.Category == CategoryMarketing
	global := marketing && l.MaxMarketing > 0
	own := cc.c.FrequencyCap
	if !global && own == nil {
		// Without a cap nothing is counted (nor written to the changelog):
		// a cap set later counts from then on.
		return "", deferred, false
	}
	h := idHash("campaign|" + cc.c.ID)
	if _, ok := p.sentFor(h); ok {
		return "", deferred, false
	}
	if global && p.sentSince(at.Add(-l.MarketingWindow), true) >= l.MaxMarketing {
		return skipFrequencyCap, false, false
	}
	if own != nil && p.sentSince(at.Add(-time.Duration(own.PeriodSeconds)*time.Second), false) >= own.Max {
		return skipCampaignCap, false, false
	}
	if record {
		p.addSend(at, h, marketing)
		return "", deferred, true
	}
	return "", deferred, false
}

// campaignRequest builds the request of campaign cc for profile p (its key
// without the app: the hwid, or "user:"/"anon:" and an id), or the reason
// it gets none.
func (s *Segmenter) campaignRequest(cc *compiledCampaign, e *schemas.Event, id []byte, p *Profile, now time.Time) (*schemas.DispatchRequest, string) {
	switch {
	case p.WhatsApp == "":
		return nil, skipNoWhatsApp
	case !p.Registered:
		return nil, skipUnregistered
	case cc.c.Template.Category == CategoryMarketing && s.optedOut(e.App, p):
		return nil, skipOptedOut
	}
	t := &schemas.Template{Name: cc.c.Template.Name, Language: cc.c.Template.Language, Category: cc.c.Template.Category}
	var ok bool
	if t.Body, ok = expandAll(cc.body, p); !ok {
		return nil, skipEmptyParam
	}
	if t.Header, ok = expandAll(cc.header, p); !ok {
		return nil, skipEmptyParam
	}
	for i, pp := range cc.button {
		v, ok := pp.expand("", p)
		if !ok {
			return nil, skipEmptyParam
		}
		if t.ButtonURL == nil {
			t.ButtonURL = make(map[int]string)
		}
		t.ButtonURL[i] = v
	}
	sum := sha256.Sum256(append([]byte("cmp|"+cc.c.ID+"|"), id...))
	d := &schemas.DispatchRequest{
		ID: hex.EncodeToString(sum[:16]), App: e.App, Channel: schemas.ChannelWhatsApp,
		Sender: cc.c.Sender, To: p.WhatsApp, Country: p.Country, Template: t,
		Source:  schemas.Source{Kind: SourceCampaign, Name: cc.srcName, EventID: e.ID},
		Created: now, WindowUntil: p.WindowUntil(),
	}
	if !bytes.HasPrefix(id, []byte("user:")) && !bytes.HasPrefix(id, []byte("anon:")) {
		d.HWID = string(id)
	}
	at := cc.sendAt(p)
	start := now
	if at.After(now) {
		d.SendAt, start = at, at
	}
	d.Deadline = start.Add(campaignValidity)
	return d, ""
}

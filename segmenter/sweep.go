package segmenter

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// Sweeps re-evaluate saved segments over every profile of a partition,
// where incremental evaluation (on each event of the user) cannot see a
// change: a segment just saved (its members are the profiles that match
// now, not only those with a later event), a segment deleted (its
// membership is dropped), and segments whose filters read the clock, whose
// membership changes by itself as time passes.
//
// A sweep is a KindSweep event on the partition it sweeps, so it runs in
// the partition's order, on the member that owns it, and its outputs
// (segment events, changelog) are produced and committed like any event's:
// a crash re-runs it, and entry and exit event ids are derived from the
// sweep's id, the profile and the segment, so a re-run produces the same
// ones (and none for profiles whose membership was already saved).

// ownedParts tracks the events partitions this member owns, for the sweep
// timer.
type ownedParts struct {
	mu    sync.Mutex
	parts map[int32]bool
}

func (o *ownedParts) set(parts []int32, own bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.parts == nil {
		o.parts = make(map[int32]bool)
	}
	for _, p := range parts {
		if own {
			o.parts[p] = true
		} else {
			delete(o.parts, p)
		}
	}
}

func (o *ownedParts) list() []int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Sorted(maps.Keys(o.parts))
}

// onLost forgets revoked or lost partitions.
func (s *Segmenter) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.owned.set(lost[schemas.TopicEvents], false)
	s.timers.drop(lost[schemas.TopicEvents])
	s.dropPending(lost[schemas.TopicEvents])
}

// segmentEvent is the PW_SegmentEntered (member) or PW_SegmentExited event
// of the profile who for segment, with an id derived from seed.
func segmentEvent(seed string, who *schemas.Event, segment string, member bool, now time.Time) (*kgo.Record, error) {
	name := schemas.EventSegmentExited
	if member {
		name = schemas.EventSegmentEntered
	}
	ev := &schemas.Event{
		ID: hashID("seg", seed, segment, name), App: who.App, Kind: schemas.KindEvent, Name: name,
		Time: now, Received: now, HWID: who.HWID, UserID: who.UserID, AnonymousID: who.AnonymousID,
		Attributes: map[string]any{"segment": segment},
	}
	return &kgo.Record{Topic: schemas.TopicEvents, Key: ev.Key(), Value: appendSimpleEvent(make([]byte, 0, 384), ev)}, nil
}

// runSweep re-evaluates the segments sweep event e names over the profiles
// of rec's partition.
func (s *Segmenter) runSweep(out []*kgo.Record, rec *kgo.Record, e *schemas.Event, now time.Time) []*kgo.Record {
	s.m.events[e.Kind].Inc()
	sw := e.Sweep
	var segs []*savedSegment
	var drop uint64
	switch {
	case sw.Segment == "":
		for _, sg := range s.segs.of(e.App) {
			if sg.f.UsesNow() {
				segs = append(segs, sg)
			}
		}
	case sw.Filter == "":
		drop = segmentID(sw.Segment)
	default:
		sg, err := compileSegment(&schemas.SegmentDef{App: e.App, Name: sw.Segment, Filter: sw.Filter, Updated: e.Time})
		if err != nil {
			return s.deadLetter(out, rec, fmt.Sprintf("sweep of segment %q: %v", sw.Segment, err))
		}
		segs = []*savedSegment{sg}
	}
	if len(segs) == 0 && drop == 0 {
		return out
	}
	prefix := []byte(e.App + "|")
	var profiles, entered, exited int
	_, err := s.eachProfile(s.batchCtx, rec.Partition, e.App, func(key []byte, p *Profile) {
		out = s.flushPart(out)
		profiles++
		changed := false
		if drop != 0 && p.in(drop) {
			p.setIn(drop, false)
			changed = true
		}
		who := identity(e.App, key[len(prefix):])
		var joined []string
		for _, sg := range segs {
			s.m.segmentEvals.Inc()
			member := sg.f.Match(p, now)
			if member == p.in(sg.id) {
				continue
			}
			p.setIn(sg.id, member)
			changed = true
			r, err := segmentEvent(e.ID+"|"+string(key), who, sg.name, member, now)
			if err != nil {
				continue // cannot happen: plain fields
			}
			out = append(out, r)
			if member {
				entered++
				joined = append(joined, sg.name)
				s.m.segmentEntered.Inc()
			} else {
				exited++
				s.m.segmentExited.Inc()
			}
		}
		if !changed {
			return
		}
		// Entering a segment enters its journeys, whether an event or a
		// sweep moved the user in.
		deadline := p.nextDeadline()
		var tags bool
		out, tags = s.enterSegmentJourneys(out, key, who, e.ID+"|"+string(key), p, joined, now)
		if err := s.save(key, p); err != nil {
			s.revert(key, p)
			return
		}
		s.noteChanged(key, rec.Partition, who, p, tags)
		if d := p.nextDeadline(); !d.IsZero() && !d.Equal(deadline) {
			s.timers.add(rec.Partition, key, d)
		}
	})
	if err != nil {
		s.coldErr = fmt.Errorf("sweep %s: %w", e.ID, err)
		return out
	}
	s.log.Debug("segments swept on partition", "app", e.App, "segment", sw.Segment, "partition", rec.Partition,
		"profiles", profiles, "entered", entered, "exited", exited)
	return out
}

// sweepApps returns the apps with a saved segment whose filter reads the
// clock.
func (r *segments) sweepApps() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var apps []string
	for app, l := range r.byApp {
		for _, sg := range l {
			if sg.f.UsesNow() {
				apps = append(apps, app)
				break
			}
		}
	}
	slices.Sort(apps)
	return apps
}

// runSweeps writes, every Config.SweepInterval until ctx is done, a sweep
// event for each app with time-relative segments to each events partition
// this member owns.
func (s *Segmenter) runSweeps(ctx context.Context) {
	if s.cfg.SweepInterval <= 0 {
		return
	}
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		apps, parts := s.segs.sweepApps(), s.owned.list()
		if len(apps) == 0 || len(parts) == 0 {
			continue
		}
		now := s.now().UTC()
		var recs []*kgo.Record
		for _, app := range apps {
			for _, p := range parts {
				e := &schemas.Event{
					ID:  "sweep-" + strconv.FormatInt(now.UnixMilli(), 10) + "-p" + strconv.Itoa(int(p)),
					App: app, Kind: schemas.KindSweep, Name: "PW_SegmentSweep", Time: now, Received: now, Sweep: &schemas.Sweep{},
				}
				b, err := e.Marshal()
				if err != nil {
					continue
				}
				recs = append(recs, &kgo.Record{Topic: schemas.TopicEvents, Partition: p, Key: e.Key(), Value: b})
			}
		}
		if err := s.producePartitioned(ctx, recs); err != nil {
			s.log.Warn("writing segment sweeps", "err", err)
		}
	}
}

// producePartitioned writes control events (sweeps, journey ticks), which
// name their partition.
func (s *Segmenter) producePartitioned(ctx context.Context, recs []*kgo.Record) error {
	cl, err := s.campaignClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, recs...).FirstErr()
}

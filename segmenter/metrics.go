package segmenter

import (
	"errors"
	"fmt"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/schemas"
)

// metrics of one Segmenter; the package comment lists them.
type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	events           map[schemas.EventKind]prometheus.Counter
	duplicates       prometheus.Counter
	dispatch         *prometheus.CounterVec
	keywordDispatch  prometheus.Counter
	skipped          *prometheus.CounterVec
	keywordMatches   map[string]prometheus.Counter // by mode label
	keywordActions   map[string]prometheus.Counter // by action
	deadLetters      prometheus.Counter
	ignoredTags      prometheus.Counter
	tagRecords       prometheus.Counter
	tagDefs          prometheus.Counter
	journeyEntries   prometheus.Counter
	journeySteps     prometheus.Counter
	journeyTimers    prometheus.Counter
	journeyExits     *prometheus.CounterVec
	journeySkipped   *prometheus.CounterVec
	journeyIgnored   *prometheus.CounterVec
	coldLoads        prometheus.Counter
	coldErrors       prometheus.Counter
	changelogRecords prometheus.Counter
	changelogFlushes *prometheus.CounterVec
	coalesced        prometheus.Counter
	restoredProfiles prometheus.Counter
	restoreDuration  prometheus.Histogram
	segmentEvals     prometheus.Counter
	segmentChanges   *prometheus.CounterVec
	campaignSkipped  *prometheus.CounterVec
	batchDuration    prometheus.Histogram
	merges           *prometheus.CounterVec
	mergeConflicts   prometheus.Counter
	forwarded        prometheus.Counter
	hotSwitches      *prometheus.CounterVec
	inPlace          prometheus.Counter

	// segmentEntered and segmentExited are segmentChanges' two children,
	// skips skipped's by reason: looked up once, not on every event.
	segmentEntered, segmentExited prometheus.Counter
	skips                         map[string]prometheus.Counter
}

var eventKinds = schemas.Kinds

// newMetrics registers the metrics with reg (nil: not registered).
func newMetrics(reg prometheus.Registerer, cache *fastcache.Cache) (*metrics, error) {
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_segmenter_events_total",
		Help: "Events applied to profiles, by kind (duplicates not included).",
	}, []string{"kind"})
	matches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_segmenter_keyword_matches_total",
		Help: "Inbound texts a keyword rule fired for, by mode (first_word, exact, pattern, any, builtin); redeliveries included.",
	}, []string{"mode"})
	actions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_segmenter_keyword_actions_total",
		Help: "Keyword actions done, by action (template, text: replies produced; set_tags, opt_out, opt_in: applied to a profile).",
	}, []string{"action"})
	m := &metrics{
		reg:            reg,
		keywordMatches: make(map[string]prometheus.Counter, len(matchModes)),
		keywordActions: make(map[string]prometheus.Counter, len(keywordActions)),
		events:         make(map[schemas.EventKind]prometheus.Counter, len(eventKinds)),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_duplicate_events_total",
			Help: "Events skipped because their id was applied to the profile already (redelivery, producer retry).",
		}),
		dispatch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_dispatch_requests_total",
			Help: "Dispatch requests produced, by source kind.",
		}, []string{"source"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_keyword_skipped_total",
			Help: "Matched keywords that produced no request, by reason (opted_out, empty_param, window_closed, stale, profile_full).",
		}, []string{"reason"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_dead_letters_total",
			Help: "Records sent to the dead-letter topic.",
		}),
		ignoredTags: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_ignored_tags_total",
			Help: "Tag values not stored because of their type (objects, nested lists) or an empty name.",
		}),
		tagRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_tag_records_total",
			Help: "ProfileTags records produced to the tags topic (one per profile whose tags changed since the last changelog write).",
		}),
		changelogRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_changelog_records_total",
			Help: "Profile changelog records produced (one per profile changed since the last changelog write).",
		}),
		changelogFlushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_changelog_writes_total",
			Help: "Writes of the pending changelog and tags records (each followed by a commit of the events they cover), by why: caught_up, interval, bytes, revoke, stop.",
		}, []string{"reason"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_changelog_coalesced_total",
			Help: "Changelog records not written because a later part of the stream changed the same profile before the pending one was written.",
		}),
		restoredProfiles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_restored_profiles_total",
			Help: "Profiles loaded from the changelog on partition assignment.",
		}),
		restoreDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_segmenter_restore_duration_seconds",
			Help:    "Time to restore the profiles of newly assigned partitions from the changelog, before processing them.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
		}),
		journeyEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_journey_entries_total",
			Help: "Users entered into a journey.",
		}),
		journeySteps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_journey_steps_total",
			Help: "Journey steps run.",
		}),
		journeyTimers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_journey_timers_fired_total",
			Help: "Journey waits and timeouts that ended on their timer.",
		}),
		journeyExits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_journey_exits_total",
			Help: "Users who left a journey, by reason (completed, goal).",
		}, []string{"reason"}),
		journeySkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_journey_skipped_total",
			Help: "Journey send steps that sent nothing, by reason (no_address, opted_out, window_closed, empty_param, frequency_cap, invalid).",
		}, []string{"reason"}),
		journeyIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_journey_ignored_total",
			Help: "Counted no-ops: feedback no step waited for (late, duplicate), entries refused by the re-entry policy or the run limit, runs of unknown journeys dropped.",
		}, []string{"reason"}),
		coldLoads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_cold_loads_total",
			Help: "Profiles evicted from the cache and read back from the changelog.",
		}),
		coldErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_cold_read_errors_total",
			Help: "Failed reads of evicted profiles from the changelog (each is retried).",
		}),
		tagDefs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_tag_definitions_total",
			Help: "Tag registry records written for tag names (or value types) new to the registry.",
		}),
		segmentEvals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_segment_evaluations_total",
			Help: "Segment filters evaluated on a profile change (only segments that read a changed field are).",
		}),
		segmentChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_segment_changes_total",
			Help: "Segment entries and exits, by event (PW_SegmentEntered, PW_SegmentExited).",
		}, []string{"event"}),
		campaignSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_campaign_skipped_total",
			Help: "Campaign recipients matched by the filter but not sent to, by reason (no_whatsapp, unregistered, opted_out, empty_param, evicted).",
		}, []string{"reason"}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_segmenter_batch_duration_seconds",
			Help:    "Time to process a polled batch and produce its outputs.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}),
		merges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_merge_steps_total",
			Help: "Identity-resolution steps written, by step (pull, push, done); redeliveries included.",
		}, []string{"step"}),
		mergeConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_merge_conflicts_total",
			Help: "Merges not done because the earlier profile was merged into another user already, or the user's profile was.",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_forwarded_events_total",
			Help: "Events of a profile merged into a user's, written again keyed by the user.",
		}),
		hotSwitches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_segmenter_hot_switches_total",
			Help: "Workers turning off (to=off) or back on (to=on) the decoded profiles they keep between events, as the share of events that would find theirs there falls or rises.",
		}, []string{"to"}),
		inPlace: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_segmenter_in_place_events_total",
			Help: "Events applied to a profile's encoding in the cache, without decoding it: custom events and message statuses that no segment or journey of their app refers to.",
		}),
	}
	for _, to := range []string{"on", "off"} {
		m.hotSwitches.WithLabelValues(to)
	}
	for _, st := range []string{schemas.MergePull, schemas.MergePush, schemas.MergeDone} {
		m.merges.WithLabelValues(st)
	}
	for _, r := range []string{writeCaughtUp, writeInterval, writeBytes, writeRevoke, writeStop} {
		m.changelogFlushes.WithLabelValues(r)
	}
	for _, k := range eventKinds {
		m.events[k] = events.WithLabelValues(string(k))
	}
	m.keywordDispatch = m.dispatch.WithLabelValues(SourceKeyword)
	m.segmentEntered = m.segmentChanges.WithLabelValues(schemas.EventSegmentEntered)
	m.segmentExited = m.segmentChanges.WithLabelValues(schemas.EventSegmentExited)
	m.skips = make(map[string]prometheus.Counter, len(skipReasons))
	for _, r := range skipReasons {
		m.skips[r] = m.skipped.WithLabelValues(r)
	}
	for _, l := range matchModes {
		m.keywordMatches[l] = matches.WithLabelValues(l)
	}
	for _, a := range keywordActions {
		m.keywordActions[a] = actions.WithLabelValues(a)
	}
	profiles := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_segmenter_profiles",
		Help: "Profiles in the cache (fastcache entries).",
	}, func() float64 {
		var s fastcache.Stats
		cache.UpdateStats(&s)
		return float64(s.EntriesCount)
	})
	m.collectors = []prometheus.Collector{events, m.duplicates, m.dispatch, m.skipped, matches, actions, m.deadLetters, m.ignoredTags, m.tagRecords, m.tagDefs, m.coldLoads, m.coldErrors, m.journeyEntries, m.journeySteps, m.journeyTimers, m.journeyExits, m.journeySkipped, m.journeyIgnored, m.changelogRecords, m.changelogFlushes, m.coalesced, m.restoredProfiles, m.restoreDuration, m.segmentEvals, m.segmentChanges, m.campaignSkipped, m.batchDuration, m.merges, m.mergeConflicts, m.forwarded, m.hotSwitches, m.inPlace, profiles}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("registering segmenter metrics (one segmenter per registry): %w", err)
			}
			return nil, fmt.Errorf("registering segmenter metrics: %w", err)
		}
	}
	return m, nil
}

// unregister removes the metrics from the registry.
func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

// skip counts one skip for reason.
func (m *metrics) skip(reason string) {
	if c, ok := m.skips[reason]; ok {
		c.Inc()
		return
	}
	m.skipped.WithLabelValues(reason).Inc()
}

package analytics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// Attribution: every state a dispatch reaches becomes a message_facts row
// carrying the dispatch's source, template, category, country and request
// day, which the fact counter (counter.go) counts into fact_days and
// fact_sources for the funnel and cost queries (migrations/0003, 0011). Requests and outcomes carry that themselves;
// statuses name only the dispatch id, and inbound replies only the wamid
// they reply to, so their facts are "open" until the dispatch is looked up:
//
//  1. the batch's dispatch_meta and wamids rows are inserted first;
//  2. each open fact is resolved from the batch's own rows, else by one
//     lookup per app and table (WHERE app = ? AND dispatch_id IN (...));
//  3. facts still unresolved are inserted into pending_facts, and looked up
//     once more (the double check below);
//  4. pending facts waiting for a dispatch or wamid of this batch are read
//     back and resolved.
//
// The double check makes the two orders safe whichever sink process (or
// batch) sees each side: a status's process inserts the pending fact and
// then looks again; a request's process inserts the meta and then reads
// the pending facts. If the second look misses, the meta was inserted
// after it, so the request's read of pending facts comes after the pending
// insert and finds it. Facts written twice collapse (their sorting key is
// the dispatch and state; the aggregate counts distinct dispatches).

// openFact is a fact whose dispatch is known by reference only: ref is
// "d:" + dispatch id or "w:" + wamid.
type openFact struct {
	src           int
	app, ref      string
	state, detail string
	amount        int64
	currency      string
	time          time.Time
}

// dispatchMeta is what a fact takes from its dispatch.
type dispatchMeta struct {
	day, due                         time.Time
	sourceKind, sourceName, template string
	category, country                string
}

// appKey keys lookups by app.
type appKey struct{ app, id string }

// noPrice is the amount of a billed fact without a known rate.
const noPrice = -1

// readBuckets are the time-to-read buckets of read facts, in order.
var readBuckets = []struct {
	below time.Duration
	name  string
}{
	{time.Minute, "< 1 min"},
	{5 * time.Minute, "1-5 min"},
	{time.Hour, "5-60 min"},
	{6 * time.Hour, "1-6 h"},
	{24 * time.Hour, "6-24 h"},
	{1 << 62, ">= 24 h"},
}

// readBucket names the bucket of a message read d after it was due.
func readBucket(d time.Duration) string {
	for _, b := range readBuckets {
		if d < b.below {
			return b.name
		}
	}
	return readBuckets[len(readBuckets)-1].name
}

// metaOf is the dispatch_meta row of a request or outcome row.
func metaOf(m *messageRow) metaRow {
	return metaRow{
		src: m.src, app: m.app, dispatchID: m.dispatchID, day: m.date, due: m.requested,
		sourceKind: m.sourceKind, sourceName: m.sourceName, template: m.template, category: m.category, country: m.country,
	}
}

func (mr *metaRow) meta() dispatchMeta {
	return dispatchMeta{
		day: mr.day, due: mr.due, sourceKind: mr.sourceKind, sourceName: mr.sourceName,
		template: mr.template, category: mr.category, country: mr.country,
	}
}

// factOf attributes an open fact to its dispatch.
func factOf(f *openFact, dispatchID string, m dispatchMeta) factRow {
	detail := f.detail
	if f.state == "read" {
		detail = readBucket(f.time.Sub(m.due))
	}
	return factRow{
		src: f.src, app: f.app, day: m.day, sourceKind: m.sourceKind, sourceName: m.sourceName, template: m.template,
		category: m.category, country: m.country, dispatchID: dispatchID, state: f.state, detail: detail,
		amount: f.amount, currency: f.currency, time: f.time,
	}
}

func (f *openFact) pending(resolved bool) pendingRow {
	p := pendingRow{
		src: f.src, app: f.app, ref: f.ref, state: f.state, detail: f.detail, amount: f.amount,
		currency: f.currency, time: f.time, version: 1,
	}
	if resolved {
		p.resolved, p.version = 1, 2
	}
	return p
}

// appendStatusFacts appends the open facts of a status naming a dispatch:
// what it implies reached (read implies delivered and sent), and billed
// for a billable one. They are appended to the batch's slice, not returned
// in one of their own: one allocation fewer per status.
func appendStatusFacts(out []openFact, st *statusRow, cost *costRow) []openFact {
	ref := "d:" + st.dispatchID
	f := func(state, detail string) openFact {
		return openFact{src: st.src, app: st.app, ref: ref, state: state, detail: detail, time: st.time}
	}
	switch st.status {
	case "sent":
		out = append(out, f("sent", ""))
	case "delivered":
		out = append(out, f("sent", ""), f("delivered", ""))
	case "read":
		out = append(out, f("sent", ""), f("delivered", ""), f("read", ""))
	case "failed":
		out = append(out, f("failed", strconv.Itoa(int(st.errorCode))))
	}
	if cost != nil {
		b := f("billed", cost.pricingCategory)
		b.amount, b.currency = cost.priceMicros, cost.currency
		if cost.priceKnown == 0 {
			b.amount = noPrice
		}
		out = append(out, b)
	}
	return out
}

// appendMessageFacts appends the facts of a request (requested) or an
// outcome (requested, and its state).
func appendMessageFacts(out []openFact, m *messageRow) []openFact {
	ref := "d:" + m.dispatchID
	f := func(state, detail string, t time.Time) openFact {
		return openFact{src: m.src, app: m.app, ref: ref, state: state, detail: detail, time: t}
	}
	out = append(out, f("requested", "", m.requested))
	switch m.state {
	case "requested":
	case "accepted":
		out = append(out, f("sent", "", m.time))
	case "failed":
		out = append(out, f("failed", strconv.Itoa(int(m.errorCode)), m.time))
	default: // expired, in_doubt
		out = append(out, f(m.state, "", m.time))
	}
	return out
}

// metaCacheSize bounds the dispatches a sink remembers between batches
// (two generations of half as many; about 150 bytes each).
const metaCacheSize = 200_000

// metaCache remembers the dispatches of recent batches, so that the
// statuses following a dispatch by seconds need no lookup when the same
// sink saw the request. Dispatches never change, so a remembered one is
// always right. Only the goroutine of Write uses it.
type metaCache struct {
	cur, prev map[appKey]dispatchMeta
}

func (c *metaCache) get(k appKey) (dispatchMeta, bool) {
	if m, ok := c.cur[k]; ok {
		return m, true
	}
	m, ok := c.prev[k]
	return m, ok
}

func (c *metaCache) put(k appKey, m dispatchMeta) {
	if c.cur == nil || len(c.cur) >= metaCacheSize/2 {
		c.prev, c.cur = c.cur, make(map[appKey]dispatchMeta, metaCacheSize/2)
	}
	c.cur[k] = m
}

// attribution is the state of one batch's attribution.
type attribution struct {
	metas  map[appKey]dispatchMeta
	wamids map[appKey]string
	facts  []factRow
	// pending are pending_facts rows to insert: new ones (resolved 0) and
	// resolutions (resolved 1).
	pending []pendingRow
}

// attribute inserts the batch's dispatch_meta and wamids rows, resolves its
// open facts and the pending facts they unblock, and inserts the facts and
// pending rows (see the comment at the top of the file).
func (s *Sink) attribute(ctx context.Context, r *rows, rejected map[int]string) error {
	metas := without(r.metas, rejected, dispatchMetaTable.src)
	wamids := without(r.wamids, rejected, wamidsTable.src)
	if err := insertAll(ctx, s, dispatchMetaTable, metas, rejected); err != nil {
		return err
	}
	if err := insertAll(ctx, s, wamidsTable, wamids, rejected); err != nil {
		return err
	}
	a := &attribution{
		metas: make(map[appKey]dispatchMeta, len(metas)), wamids: make(map[appKey]string, len(wamids)),
		facts: slices.Grow(truncate(s.facts), len(r.open)),
	}
	defer func() { s.facts = a.facts }()
	for i := range metas {
		k, m := appKey{metas[i].app, metas[i].dispatchID}, metas[i].meta()
		a.metas[k] = m
		s.metas.put(k, m)
	}
	for i := range wamids {
		a.wamids[appKey{wamids[i].app, wamids[i].wamid}] = wamids[i].dispatchID
	}

	open := without(r.open, rejected, func(f *openFact) int { return f.src })
	refs, err := s.resolve(ctx, a, open)
	if err != nil {
		return err
	}
	var parked []openFact
	for i := range open {
		if refs[i] != "" {
			f := open[i]
			f.ref = refs[i] // a reply whose wamid is known waits for its dispatch
			parked = append(parked, f)
		}
	}
	if f := s.beforePark.Load(); f != nil && len(parked) > 0 {
		(*f)()
	}
	if len(parked) > 0 {
		// 3. Park them, then look again.
		rows := make([]pendingRow, len(parked))
		for i := range parked {
			rows[i] = parked[i].pending(false)
		}
		if err := insertAll(ctx, s, pendingTable, rows, rejected); err != nil {
			return err
		}
		s.m.factsPending.Add(float64(len(parked)))
		if err := s.resolveParked(ctx, a, parked); err != nil {
			return err
		}
	}

	// 4. Pending facts this batch's dispatches and wamids unblock.
	waiting, err := s.readPending(ctx, a)
	if err != nil {
		return err
	}
	if err := s.resolveParked(ctx, a, waiting); err != nil {
		return err
	}
	// The facts to count, and the outcomes (sends_by_day counts each
	// outcome a dispatch had; message_facts does not hold them), produced
	// while the facts are inserted: a fact produced for a batch that is
	// then not committed is produced again with the batch, which the
	// counter absorbs. (rejected is this job's own map, and no insert of
	// this job has added to it since the rows were chosen.)
	facts := without(a.facts, rejected, func(f *factRow) int { return f.src })
	outcomes := without(r.messages, rejected, func(m *messageRow) int { return m.src })
	produced := make(chan error, 1)
	go func() { produced <- s.produceFacts(ctx, facts, outcomes) }()
	err = insertAll(ctx, s, factsTable, a.facts, rejected)
	if err == nil {
		err = insertAll(ctx, s, pendingTable, a.pending, rejected)
	}
	return errors.Join(err, <-produced)
}

// produceFacts produces facts and an outcome fact of each of outcomes to
// herald.facts.v1, one DispatchFacts record per dispatch, and waits for the
// acks (retrying until ctx is done): the batch is marked for commit only
// after the fact counter can count every fact of it.
func (s *Sink) produceFacts(ctx context.Context, facts []factRow, outcomes []messageRow) error {
	if len(facts)+len(outcomes) == 0 {
		return nil
	}
	at := make(map[appKey]int, len(facts)/2+len(outcomes))
	var recs []*schemas.DispatchFacts
	get := func(app, id string, m dispatchMeta) *schemas.DispatchFacts {
		k := appKey{app, id}
		i, ok := at[k]
		if !ok {
			i = len(recs)
			at[k] = i
			recs = append(recs, &schemas.DispatchFacts{
				App: app, DispatchID: id, Day: m.day.UTC().Format(time.DateOnly),
				SourceKind: m.sourceKind, SourceName: m.sourceName, Template: m.template, Category: m.category, Country: m.country,
			})
		}
		return recs[i]
	}
	for i := range facts {
		f := &facts[i]
		d := get(f.app, f.dispatchID, dispatchMeta{
			day: f.day, sourceKind: f.sourceKind, sourceName: f.sourceName,
			template: f.template, category: f.category, country: f.country,
		})
		d.Facts = append(d.Facts, schemas.DispatchFact{State: f.state, Detail: f.detail, Amount: f.amount, Currency: f.currency, Time: f.time})
	}
	for i := range outcomes {
		m := &outcomes[i]
		mr := metaOf(m)
		d := get(m.app, m.dispatchID, mr.meta())
		d.Facts = append(d.Facts, schemas.DispatchFact{State: schemas.FactOutcome, Detail: m.state, Time: m.time})
	}
	out := make([]*kgo.Record, len(recs))
	for i, d := range recs {
		b, err := d.Marshal()
		if err != nil {
			return fmt.Errorf("encoding the facts of dispatch %s: %w", clip(d.DispatchID, 64), err)
		}
		out[i] = &kgo.Record{Topic: schemas.TopicFacts, Key: d.Key(), Value: b}
	}
	return retry(ctx, s.log, "producing facts", func() error {
		var failed []*kgo.Record
		var first error
		for _, r := range s.cl.ProduceSync(ctx, out...) {
			if r.Err != nil {
				failed = append(failed, r.Record)
				if first == nil {
					first = r.Err
				}
			}
		}
		if first != nil {
			out = failed
			return fmt.Errorf("producing %d fact records to %s: %w", len(failed), schemas.TopicFacts, first)
		}
		return nil
	})
}

// resolveParked resolves facts that are in pending_facts: each resolved
// one gets a resolution row; a reply whose wamid now resolved to a
// dispatch not known yet moves to a pending row under the dispatch.
func (s *Sink) resolveParked(ctx context.Context, a *attribution, parked []openFact) error {
	if len(parked) == 0 {
		return nil
	}
	before := len(a.facts)
	refs, err := s.resolve(ctx, a, parked)
	if err != nil {
		return err
	}
	for i := range parked {
		f := &parked[i]
		switch refs[i] {
		case "":
			a.pending = append(a.pending, f.pending(true))
		case f.ref:
		default:
			moved := *f
			moved.ref = refs[i]
			a.pending = append(a.pending, f.pending(true), moved.pending(false))
		}
	}
	s.m.factsResolved.Add(float64(len(a.facts) - before))
	return nil
}

// resolve attributes the facts it can (appending to a.facts) and returns,
// for each fact, "" when it was attributed, else the reference it waits
// for: a reply (w:) whose wamid is known waits for the wamid's dispatch.
func (s *Sink) resolve(ctx context.Context, a *attribution, open []openFact) ([]string, error) {
	refs := make([]string, len(open))
	if len(open) == 0 {
		return refs, nil
	}
	// Wamids not in the batch: one lookup per app.
	var missW []appKey
	for i := range open {
		if w, ok := strings.CutPrefix(open[i].ref, "w:"); ok {
			if _, known := a.wamids[appKey{open[i].app, w}]; !known {
				missW = append(missW, appKey{open[i].app, w})
			}
		}
	}
	if err := s.lookupWamids(ctx, a, missW); err != nil {
		return nil, err
	}
	var missD []appKey
	for i := range open {
		refs[i] = open[i].ref
		if w, ok := strings.CutPrefix(refs[i], "w:"); ok {
			d, known := a.wamids[appKey{open[i].app, w}]
			if !known {
				continue
			}
			refs[i] = "d:" + d
		}
		k := appKey{open[i].app, strings.TrimPrefix(refs[i], "d:")}
		if _, known := a.metas[k]; known {
			continue
		}
		if m, ok := s.metas.get(k); ok {
			a.metas[k] = m
			continue
		}
		missD = append(missD, k)
	}
	if err := s.lookupMetas(ctx, a, missD); err != nil {
		return nil, err
	}
	for i := range open {
		id, isD := strings.CutPrefix(refs[i], "d:")
		if !isD {
			continue
		}
		if m, ok := a.metas[appKey{open[i].app, id}]; ok {
			a.facts = append(a.facts, factOf(&open[i], id, m))
			refs[i] = ""
		}
	}
	return refs, nil
}

// inSetOf binds vs as the tuple of an IN ?.
func inSetOf(vs []any) clickhouse.GroupSet { return clickhouse.GroupSet{Value: vs} }

// inSet binds ids as the tuple of an IN ? (clickhouse-go binds a plain
// slice as an array, which IN refuses).
func inSet(ids []string) clickhouse.GroupSet {
	v := make([]any, len(ids))
	for i, id := range ids {
		v[i] = id
	}
	return clickhouse.GroupSet{Value: v}
}

// lookupChunk is the most ids one lookup sends: ClickHouse refuses
// queries over max_query_size (256 KiB by default).
const lookupChunk = 2000

// chunk is one lookup: an app and at most lookupChunk ids.
type chunk struct {
	app string
	ids []string
}

// byApp groups keys by app, each id once, in chunks of lookupChunk ids.
func byApp(keys []appKey) []chunk {
	var out []chunk
	at := map[string]int{}
	seen := map[appKey]bool{}
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		i, ok := at[k.app]
		if !ok || len(out[i].ids) == lookupChunk {
			out = append(out, chunk{app: k.app})
			i = len(out) - 1
			at[k.app] = i
		}
		out[i].ids = append(out[i].ids, k.id)
	}
	return out
}

// lookupWamids reads the dispatch ids of wamids from ClickHouse into a.
func (s *Sink) lookupWamids(ctx context.Context, a *attribution, keys []appKey) error {
	for _, c := range byApp(keys) {
		app, ids := c.app, c.ids
		err := retry(ctx, s.log, "looking up wamids", func() error {
			return queryEach(ctx, s.conn, "looking up wamids",
				"SELECT wamid, any(dispatch_id) FROM wamids WHERE app = ? AND wamid IN ? GROUP BY wamid", []any{app, inSet(ids)},
				func(scan func(...any) error) error {
					var w, d string
					if err := scan(&w, &d); err != nil {
						return err
					}
					a.wamids[appKey{app, w}] = d
					return nil
				})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// lookupMetas reads dispatch_meta rows from ClickHouse into a. The rows of
// one dispatch (its request and outcomes) agree; max picks a non-empty
// value should one of them lack it.
func (s *Sink) lookupMetas(ctx context.Context, a *attribution, keys []appKey) error {
	for _, c := range byApp(keys) {
		app, ids := c.app, c.ids
		err := retry(ctx, s.log, "looking up dispatches", func() error {
			return queryEach(ctx, s.conn, "looking up dispatches",
				`SELECT dispatch_id, min(day), min(due), max(source_kind), max(source_name), max(template), max(category), max(country)
				FROM dispatch_meta WHERE app = ? AND dispatch_id IN ? GROUP BY dispatch_id`, []any{app, inSet(ids)},
				func(scan func(...any) error) error {
					var id string
					var m dispatchMeta
					if err := scan(&id, &m.day, &m.due, &m.sourceKind, &m.sourceName, &m.template, &m.category, &m.country); err != nil {
						return err
					}
					m.day, m.due = m.day.UTC(), m.due.UTC()
					a.metas[appKey{app, id}] = m
					// app may be a substring of a status event's value
					// (DecodeEventShared): the cache outlives the batch,
					// so it keeps a copy, not the whole event.
					s.metas.put(appKey{strings.Clone(app), id}, m)
					return nil
				})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// readPending reads the unresolved pending facts that wait for a dispatch
// or wamid of the batch.
func (s *Sink) readPending(ctx context.Context, a *attribution) ([]openFact, error) {
	if len(a.metas)+len(a.wamids) == 0 {
		return nil, nil
	}
	// Nothing was ever parked unresolved (the usual case): a count of the
	// small table instead of a lookup of every id of the batch. Rows of
	// facts resolved since stay until merges replace them, so a non-zero
	// count only means "look".
	var waiting uint64
	err := retry(ctx, s.log, "counting pending facts", func() error {
		return s.conn.QueryRow(ctx, "SELECT count() FROM pending_facts WHERE resolved = 0").Scan(&waiting)
	})
	if err != nil {
		return nil, err
	}
	if waiting == 0 {
		return nil, nil
	}
	keys := make([]appKey, 0, len(a.metas)+len(a.wamids))
	for k := range a.metas {
		keys = append(keys, appKey{k.app, "d:" + k.id})
	}
	for k := range a.wamids {
		keys = append(keys, appKey{k.app, "w:" + k.id})
	}
	var out []openFact
	for _, c := range byApp(keys) {
		app, rs := c.app, c.ids
		var got []openFact
		err := retry(ctx, s.log, "reading pending facts", func() error {
			got = got[:0]
			return queryEach(ctx, s.conn, "reading pending facts",
				`SELECT ref, state, detail, amount, currency, time FROM
				(SELECT ref, state, detail, amount, currency, time, resolved FROM pending_facts FINAL WHERE app = ? AND ref IN ?)
				WHERE resolved = 0`, []any{app, inSet(rs)},
				func(scan func(...any) error) error {
					f := openFact{src: -1, app: app}
					if err := scan(&f.ref, &f.state, &f.detail, &f.amount, &f.currency, &f.time); err != nil {
						return err
					}
					f.time = f.time.UTC()
					got = append(got, f)
					return nil
				})
		})
		if err != nil {
			return nil, fmt.Errorf("reading pending facts of app %s: %w", app, err)
		}
		out = append(out, got...)
	}
	return out, nil
}

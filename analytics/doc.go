// Package analytics is Herald's last stage: it sinks the events, dispatch
// and outcomes topics into ClickHouse, owns the ClickHouse schema (versioned
// migrations), and holds the analyst queries of docs/ANALYTICS.md and the
// reports of `herald report`.
//
// # Data flow
//
//	herald.events.v1   -> events   (every event)
//	                      inbound  (kind inbound)
//	                      statuses, message_state, costs, wamids (kind status)
//	herald.dispatch.v1 -> message_state (state requested), dispatch_meta
//	herald.outcomes.v1 -> messages, message_state (sent, failed, expired, in_doubt),
//	                      dispatch_meta, wamids
//	all three          -> message_facts (every state attributed to its source,
//	                      see attribute.go), pending_facts (facts waiting for
//	                      their dispatch), and the same facts and every
//	                      outcome to herald.facts.v1 (keyed by dispatch)
//	herald.facts.v1    -> fact_log (the fact counter, counter.go: each
//	                      dispatch's state once), and through its views
//	                      fact_days, fact_sources (counts by day first and
//	                      by source first) and state_moves (current states)
//
// and, filled by materialized views on insert: message_times (when each
// dispatch reached each state), sends_daily, event_days, statuses_daily,
// inbound_hourly, send_failures_daily and status_failures_daily (the
// failed rows only), marketing_recipients_daily, journey_days,
// segment_daily: daily aggregates of uniqExact states. Since 0011 the
// funnel, cost, read and state queries read the fact counts; 0013 dropped
// the aggregates they read before (funnel_daily, funnel_days, sends_days,
// dispatch_ranks), whose views cost every insert server time. Since 0014
// event_days and journey_days (replacing events_daily and journey_daily)
// also hold rows, a sum that grows with every insert touching a key, and
// the Settler (settle.go, run by Sink.Run every Config.SettleInterval)
// caches their final counts in event_days_settled and
// journey_days_settled; events_by_name and journey_steps read a settled
// count while its rows equal the key's current rows, and merge the states
// of the other keys (docs/ANALYTICS.md, "Settled counts").
// docs/ANALYTICS.md documents every table and column; Queries are its
// analyst queries.
//
// A Sink is a consumer-group member (group Config.Group) driven by
// kafka.RunDrainingN (on shutdown the batch in hand is inserted and
// committed first): each polled batch (at most four times
// Config.BatchRows records) is written in chunks of BatchRows records, in
// order, the next chunk decoded on another goroutine while the one before
// is inserted (ClickHouse's work and the Go side's overlap; at most two
// chunks' rows are held). A chunk is decoded into row slices reused from
// chunk to chunk, split by table and inserted with clickhouse-go's batch
// API, column by column (at most Config.BatchRows rows per insert), up to
// three tables at once (each INSERT runs on one server thread; attribution
// orders its own inserts); the batch's offsets are marked for commit only
// after ClickHouse acknowledged every insert of every chunk. ClickHouse errors are retried with
// backoff until the context ends; while they last, fetching is paused
// (kgo.Client.PauseFetchTopics), so memory holds the batch in hand and at
// most the fetch that was in flight, and consumption resumes by itself.
//
// Records that cannot be stored go to herald.deadletter.v1 with the reason
// before the batch is marked, and never hold the partition up: records that
// do not decode or validate, values that do not fit their column (times
// outside DateTime, numbers outside their type), strings over their limit
// (ids 1 KiB, text 64 KiB, JSON 1 MiB, each error naming the field), and
// rows ClickHouse itself refuses (an insert failing with a data error, see
// isRowError, is split in halves down to the refused rows). Invalid UTF-8 is
// stored with U+FFFD in place of each bad sequence.
//
// Batches are formed by size and time: a poll hands over whatever is
// buffered (up to four times BatchRows records); after inserting a batch
// smaller than BatchRows the sink waits out the rest of Config.FlushInterval before polling
// again, so records arriving meanwhile go into the next insert and a quiet
// stream makes at most one insert per table per FlushInterval (ClickHouse
// wants few, large inserts) while the first record after a pause is inserted
// at once.
//
// # Exactly-once results from at-least-once delivery
//
// Redelivery (a crash before the commit, a rebalance, an insert retried
// after a timeout that the server had in fact stored) inserts rows again.
// The raw tables are ReplacingMergeTree keyed by deterministic ids, with
// every copy of a row in one partition: events by event id, inbound by
// wamid, statuses by (wamid, status), messages by dispatch id (the latest
// outcome wins), message_state by dispatch id (the highest-ranked state
// wins: version = rank << 40 | unix time, so statuses arriving late and out
// of order still advance it), costs by wamid. Merges happen in the
// background, so exact queries read with FINAL or count distinct ids. The
// daily aggregates hold uniqExact states, so a copy adds nothing.
//
// The fact counts (fact_days, fact_sources, state_moves) are plain sums,
// exact because every (dispatch, state) reaches fact_log once: the sink
// produces each attributed fact to herald.facts.v1, keyed and partitioned
// by its dispatch (schemas.FactsPartition), so one Counter (group
// Config.FactsGroup, run by Sink.Run) owns all facts of a dispatch; it keeps
// per partition the states counted of each dispatch (loaded from fact_log
// when it is assigned the partition, before any record of it), appends
// only facts not counted yet, and lets offsets be committed after
// ClickHouse acknowledged the insert. A crash between insert and commit
// redelivers facts the next owner's load already holds. Dispatches
// requested before Config.FactsHorizon (default 35 days) are forgotten;
// their late facts are looked up in fact_log one by one. Not protected: a
// zombie counter that lost its partition without knowing it and still
// inserts, and a change of herald.facts.v1's partition count with facts in
// flight (docs/ANALYTICS.md, "Exactly-once counts").
//
// # ClickHouse 18.16
//
// The schema must run on Debian's ClickHouse 18.16 as well as on the current
// LTS, which forces these choices (also written in the migrations and in
// docs/ANALYTICS.md):
//
//   - times are DateTime (seconds, UTC) plus a time_ms UInt16 column for the
//     milliseconds: DateTime64 arrived in 20.1;
//   - attributes and tags are JSON String columns, attributes also as
//     parallel Array(String) attr_keys / attr_values (arrayElement(attr_values,
//     indexOf(attr_keys, 'k'))): Map arrived in 21.1;
//   - no TTL (19.6), no LowCardinality (experimental before 19.x), no
//     SimpleAggregateFunction (19.8);
//   - PARTITION BY toYYYYMM(date) with date a Date column filled from the
//     UTC time, the custom partitioning syntax both versions accept; none on
//     message_state, message_times and costs, whose rows of one message can
//     fall on different days;
//   - no ALTER TABLE ... ADD COLUMN IF NOT EXISTS: Migrate skips an ADD
//     COLUMN whose column exists;
//   - daily aggregates as MATERIALIZED VIEW ... TO an AggregatingMergeTree
//     of uniqExact states (SummingMergeTree would count copies: no insert
//     deduplication for non-replicated tables on 18.16);
//   - only the native protocol (the HTTP interface of clickhouse-go fails
//     on 18.16), inserts only through batches (INSERT ... VALUES sent with
//     Exec hangs on 18.16), no {name:Type} query parameters (? placeholders,
//     which clickhouse-go binds client side).
//
// # Migrations
//
// Migrate applies the files of migrations/ (NNNN_name.sql, embedded in the
// binary) that are not yet recorded in herald_migrations, in version order,
// forward only. A file may hold several statements separated by a line
// holding only ';'. ClickHouse has no transactions: a migration interrupted
// half way is run again from its first statement, so statements are written
// to be re-runnable (CREATE ... IF NOT EXISTS; ADD COLUMN is skipped when
// the column exists).
//
// # Costs
//
// Each billable status becomes a costs row (one per wamid) and a billed
// fact priced by Config.Pricer: TablePricer prices with internal/pricing's
// rate card, which the CLI loads; without a Pricer the rows say
// price_known = 0.
//
// # Metrics
//
//	herald_analytics_rows_inserted_total{table}       counter: rows ClickHouse acknowledged
//	herald_analytics_insert_duration_seconds{table}   histogram: one insert attempt, success or not
//	herald_analytics_insert_errors_total{table}       counter: failed insert attempts (each is retried or split)
//	herald_analytics_rows_rejected_total{table}       counter: rows ClickHouse refused, their records dead-lettered
//	herald_analytics_dead_letters_total               counter: records sent to the dead-letter topic
//	herald_analytics_batch_rows                       histogram: rows decoded from one polled batch
//	herald_analytics_fetch_paused                     gauge: 1 while fetching is paused (ClickHouse refuses inserts)
//	herald_analytics_facts_pending_total              counter: facts parked because their dispatch was not known yet
//	herald_analytics_facts_resolved_total             counter: parked facts attributed later
//	herald_analytics_facts_counted_total              counter: facts the fact counter appended to fact_log
//	herald_analytics_facts_repeated_total             counter: facts skipped as counted already (redelivery, one state from two topics)
//	herald_analytics_facts_late_total                 counter: dispatches before the horizon looked up in fact_log
//	herald_analytics_facts_seen_dispatches            gauge: dispatches the fact counter remembers
//	herald_analytics_facts_load_seconds               histogram: loading one partition's counted facts at assignment
//	herald_analytics_settle_runs_total                counter: settles of event_days and journey_days (settle.go)
//	herald_analytics_settle_errors_total              counter: settles that failed (retried an interval later)
//	herald_analytics_keys_settled_total{table}        counter: keys whose count the settler wrote, by settled table
//	herald_analytics_settle_duration_seconds          histogram: one settle of every dirty key
package analytics

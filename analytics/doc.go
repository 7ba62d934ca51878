// Package analytics is Herald's last stage: it sinks the events topic and the
// outcomes topic into ClickHouse, owns the ClickHouse schema (versioned
// migrations) and prints the summary report of `herald report` and the demo.
//
// # Data flow
//
//	herald.events.v1   -> events   (every event; kind status also -> statuses)
//	herald.outcomes.v1 -> messages (one row per outcome of a dispatch request)
//
// A Sink is a consumer-group member (group Config.Group) driven by
// kafka.RunDraining (on shutdown the batch in hand is inserted and
// committed first): each polled batch is decoded, split by table and inserted with
// clickhouse-go's batch API (explicit column lists, at most Config.BatchRows
// rows per insert); the batch's offsets are marked for commit only after
// ClickHouse acknowledged every insert. ClickHouse errors are retried with
// backoff until the context ends, holding only the batch in memory while
// consumption pauses. Records that cannot be decoded or stored (bad JSON, an
// invalid record, a value that does not fit its column) go to
// herald.deadletter.v1 with the reason before the batch is marked.
//
// Batches are formed by size and time: a poll hands over whatever is
// buffered (up to BatchRows records); after inserting a batch smaller than
// that the sink waits out the rest of Config.FlushInterval before polling
// again, so records arriving meanwhile go into the next insert and a quiet
// stream makes at most one insert per table per FlushInterval (ClickHouse
// wants few, large inserts) while the first record after a pause is inserted
// at once.
//
// # Exactly-once results from at-least-once delivery
//
// Redelivery (a crash before the commit, a rebalance) inserts rows again.
// The tables are ReplacingMergeTree keyed by deterministic ids, so copies
// collapse: events by event id, statuses by (wamid, status), messages by
// dispatch id (the latest outcome wins: version column time). Merges happen
// in the background, so every query of Summarize reads with FINAL.
//
// # ClickHouse 18.16
//
// The schema must run on Debian's ClickHouse 18.16 as well as on the current
// LTS, which forces these choices (also written in migrations/0001_init.sql):
//
//   - times are DateTime (seconds, UTC) plus a time_ms UInt16 column for the
//     milliseconds: DateTime64 arrived in 20.1;
//   - attributes and tags are JSON String columns, attributes also as
//     parallel Array(String) attr_keys / attr_values (arrayElement(attr_values,
//     indexOf(attr_keys, 'k'))): Map arrived in 21.1;
//   - no TTL (19.6) and no LowCardinality (experimental before 19.x);
//   - PARTITION BY toYYYYMM(date) with date a Date column filled from the
//     UTC time, the custom partitioning syntax both versions accept;
//   - only the native protocol (the HTTP interface of clickhouse-go fails
//     on 18.16), inserts only through batches (INSERT ... VALUES sent with
//     Exec hangs on 18.16), no {name:Type} query parameters (? placeholders,
//     which clickhouse-go binds client side).
//
// Times outside DateTime's range (1970-01-01 to 2105-12-31 UTC) and numbers
// outside their column's range are dead-lettered, never wrapped around.
//
// # Migrations
//
// Migrate applies the files of migrations/ (NNNN_name.sql, embedded in the
// binary) that are not yet recorded in herald_migrations, in version order,
// forward only. A file may hold several statements separated by a line
// holding only ';'. ClickHouse has no transactions: a migration interrupted
// half way is run again from its first statement, so statements are written
// to be re-runnable (CREATE TABLE IF NOT EXISTS, ADD COLUMN IF NOT EXISTS).
//
// # Metrics
//
//	herald_analytics_rows_inserted_total{table}       counter: rows ClickHouse acknowledged
//	herald_analytics_insert_duration_seconds{table}   histogram: one insert attempt, success or not
//	herald_analytics_insert_errors_total{table}       counter: failed insert attempts (each is retried)
//	herald_analytics_dead_letters_total               counter: records sent to the dead-letter topic
//	herald_analytics_batch_rows                       histogram: rows decoded from one polled batch
package analytics

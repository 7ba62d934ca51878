-- 0011_fact_counts: exact counts at write time. The fact counter
-- (analytics/counter.go) consumes herald.facts.v1, where the sink produces
-- every attributed fact keyed and partitioned by its dispatch, so that
-- each dispatch has a single writer. Per partition it remembers which
-- states of each dispatch it counted (loaded from fact_log when it is
-- assigned the partition) and appends only the facts not counted yet to
-- fact_log; views on fact_log add them to plain SummingMergeTree counts.
-- The queries sum those counts: no uniqExact state to merge, no FINAL.
--
-- Runs on ClickHouse 18.16 and the current LTS alike, which forces:
--   * plain MergeTree and SummingMergeTree tables (no
--     SimpleAggregateFunction, 19.8+), views with MATERIALIZED VIEW ... TO;
--   * the dispatch as cityHash64(concat(app, '|', dispatch_id)), computed
--     by the counter in Go (schemas.FactsHash, go-faster/city's CH64 is
--     ClickHouse's CityHash64 v1.0.2) and by the backfill below in SQL;
--   * ARRAY JOIN of a literal array of tuples for the +1 / -1 rows of
--     state_moves (18.16 has no arrayJoin over a tuple column in a view's
--     GROUP BY; plain rows, summed at merge and by the query).
-- The backfill copies into fact_log the facts written before this migration
-- (message_facts FINAL) and each dispatch's outcome (messages FINAL: the
-- latest outcome of a dispatch only, so a dispatch that had several before
-- the migration counts in its last one), with kpartition -1 (the counter
-- loads them by their hash), and the current states from dispatch_ranks
-- into state_moves (the copied facts have rank_to 0, so the view adds
-- nothing for them). Each
-- copy runs only while its target is empty, so a migration run again after
-- it completed copies nothing; one interrupted in the middle of a copy
-- leaves part of it: TRUNCATE fact_log, fact_days, fact_sources and
-- state_moves and run herald migrate again. Run it with the sinks stopped:
-- facts written by an older sink after the copy are not counted.

-- fact_log: every fact the counter counted, once per (dispatch, state):
-- the Kafka partition and offset it came from (-1 for the backfill), the
-- dispatch hash, the state's bit in the counter's seen-set (bit) and rank
-- (message_state's: requested 1, in_doubt 2, expired 3, sent 4, failed 5,
-- delivered 6, read 7, else 0), and, when the fact raised the dispatch's
-- highest rank, the rank it left (rank_from, 0 for none) and the new one
-- (rank_to; 0 when it did not raise it). Sorted by partition first: a
-- counter assigned a partition reads only that partition's rows.
CREATE TABLE IF NOT EXISTS fact_log
(
    app String,
    day Date,
    dispatch_hash UInt64,
    dispatch_id String,
    kpartition Int32,
    koffset Int64,
    state String,
    detail String,
    bit UInt16,
    rank UInt8,
    rank_from UInt8,
    rank_to UInt8,
    source_kind String,
    source_name String,
    template String,
    category String,
    country String,
    amount Int64,
    currency String,
    time DateTime
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (kpartition, day, dispatch_hash)
;

-- fact_days: facts per request day and attribution, sorted by day first
-- (the queries without a source read it); n counts dispatches, each once
-- per state (the counter wrote each (dispatch, state) once).
CREATE TABLE IF NOT EXISTS fact_days
(
    app String,
    day Date,
    source_kind String,
    source_name String,
    template String,
    category String,
    country String,
    state String,
    detail String,
    amount Int64,
    currency String,
    n UInt64
)
ENGINE = SummingMergeTree(n)
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, source_kind, source_name, template, category, country, state, detail, amount, currency)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS fact_days_mv TO fact_days AS
SELECT app, day, source_kind, source_name, template, category, country, state, detail, amount, currency, count() AS n
FROM fact_log
GROUP BY app, day, source_kind, source_name, template, category, country, state, detail, amount, currency
;

-- fact_sources: fact_days sorted by source first (the queries of one
-- source read it).
CREATE TABLE IF NOT EXISTS fact_sources
(
    app String,
    day Date,
    source_kind String,
    source_name String,
    template String,
    category String,
    country String,
    state String,
    detail String,
    amount Int64,
    currency String,
    n UInt64
)
ENGINE = SummingMergeTree(n)
PARTITION BY toYYYYMM(day)
ORDER BY (app, source_kind, source_name, day, template, category, country, state, detail, amount, currency)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS fact_sources_mv TO fact_sources AS
SELECT app, day, source_kind, source_name, template, category, country, state, detail, amount, currency, count() AS n
FROM fact_log
GROUP BY app, day, source_kind, source_name, template, category, country, state, detail, amount, currency
;

-- state_moves: dispatches per request day and source by their highest
-- state (rank): +1 when a dispatch reaches a higher state, -1 for the one
-- it leaves. sum(n) per rank is the number of dispatches whose current
-- state it is.
CREATE TABLE IF NOT EXISTS state_moves
(
    app String,
    day Date,
    source_kind String,
    source_name String,
    rank UInt8,
    n Int64
)
ENGINE = SummingMergeTree(n)
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, source_kind, source_name, rank)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS state_moves_mv TO state_moves AS
SELECT app, day, source_kind, source_name, tupleElement(m, 1) AS rank, tupleElement(m, 2) AS n
FROM fact_log
ARRAY JOIN [(rank_to, toInt64(1)), (rank_from, toInt64(-1))] AS m
WHERE rank_to > 0 AND tupleElement(m, 1) > 0
;

INSERT INTO fact_log (app, day, dispatch_hash, dispatch_id, kpartition, koffset, state, detail, bit, rank, rank_from, rank_to,
    source_kind, source_name, template, category, country, amount, currency, time)
SELECT app, day, cityHash64(concat(app, '|', dispatch_id)), dispatch_id, toInt32(-1), toInt64(-1), state, detail,
    toUInt16(bitShiftLeft(toUInt16(1), indexOf(['requested', 'sent', 'delivered', 'read', 'failed', 'expired', 'in_doubt', 'replied', 'billed'], state) - 1)),
    toUInt8(indexOf(['requested', 'in_doubt', 'expired', 'sent', 'failed', 'delivered', 'read'], state)), toUInt8(0), toUInt8(0),
    source_kind, source_name, template, category, country, amount, currency, time
FROM message_facts FINAL
WHERE (SELECT count() FROM fact_log) = 0
;

INSERT INTO fact_log (app, day, dispatch_hash, dispatch_id, kpartition, koffset, state, detail, bit, rank, rank_from, rank_to,
    source_kind, source_name, template, category, country, amount, currency, time)
SELECT app, date, cityHash64(concat(app, '|', dispatch_id)), dispatch_id, toInt32(-1), toInt64(-1), 'outcome', state,
    toUInt16(bitShiftLeft(toUInt16(1), 9 + indexOf(['accepted', 'failed', 'expired', 'in_doubt'], state))), toUInt8(0), toUInt8(0), toUInt8(0),
    source_kind, source_name, template, category, country, toInt64(0), '', time
FROM messages FINAL
WHERE state IN ('accepted', 'failed', 'expired', 'in_doubt') AND (SELECT count() FROM fact_log WHERE state = 'outcome') = 0
;

INSERT INTO state_moves (app, day, source_kind, source_name, rank, n)
SELECT app, day, source_kind, source_name, rank, toInt64(count())
FROM
(
    SELECT app, day, source_kind, source_name, dispatch, maxMerge(rank) AS rank
    FROM dispatch_ranks
    GROUP BY app, source_kind, source_name, day, dispatch
)
WHERE rank > 0 AND (SELECT count() FROM state_moves) = 0
GROUP BY app, day, source_kind, source_name, rank

-- 0014_settled_counts: settled event counts, read while provably fresh.
--
-- events_by_name and journey_steps spent their time merging the uniqExact
-- states of event ids of events_daily and journey_daily (about 1.1 and
-- 1.3 s over 30 days of 10,000,000 messages). The states stay the source
-- of truth (a redelivered copy of an event id counts once); a key's final
-- count is cached in a settled table and read only while it is fresh:
--
--   * event_days and journey_days replace events_daily and journey_daily:
--     the same keys and states, plus rows, a sumState(toUInt64(1)) per
--     events row the view aggregates. rows only ever grows, with every
--     insert that touches the key (a redelivered copy included); one view
--     per table writes the states and rows of a block in one part, so a
--     snapshot of the parts sees both or neither;
--   * event_days_settled and journey_days_settled hold (key, events, rows)
--     as the settler (analytics/settle.go) read them in one SELECT:
--     uniqExactMerge(events) and sumMerge(rows) of one snapshot. A settled
--     count is fresh while its rows equals the key's current
--     sumMerge(rows): any later insert touching the key makes them differ.
--     Every part adds at least 1 to the rows of each key it holds and the
--     parts of a table are added in one order, so two snapshots with the
--     same rows of a key hold the same parts of it: the same count. The
--     queries read the settled count of fresh keys and merge the states of
--     the others (docs/ANALYTICS.md, "Settled counts").
--
-- Runs on ClickHouse 18.16 and the current LTS alike, which forces:
--   * rows is an AggregateFunction(sum, UInt64) column, not a
--     SimpleAggregateFunction (19.8+);
--   * the settled tables are plain ReplacingMergeTree(rows) tables (no TTL,
--     no Map, no DateTime64), read with argMax(events, rows) and max(rows)
--     grouped by key, exact whether or not their rows merged yet; a settle
--     repeated with the same rows writes the same count, so two settlers
--     at once are harmless;
--   * index_granularity = 8 on event_days and journey_days: their rows are
--     few and fat (a day's ids of a key each), and the queries read the
--     states of the dirty keys only (mostly today's); a granule of 128
--     rows (the old tables') would cover some 25 days of the bench's keys,
--     and a granule is read whole. 18.16 has no adaptive granularity;
--   * the copy of the old states is an INSERT ... SELECT of the states as
--     they are (no merge: fast), rows = sumState(toUInt64(1)) for each
--     copied row through arrayReduce (so every key has rows >= 1). The
--     views are created before the copy: events inserted between the two
--     are in both the copy and the new table, which uniqExact counts once.
--     A copy repeated (a migration interrupted after it) adds the same ids
--     and more rows: the counts stay, the keys are settled again. Run
--     again after it completed, the old tables are created empty by the
--     CREATE ... IF NOT EXISTS below, copied (nothing) and dropped again;
--   * the old views and tables are dropped last, the views first (as in
--     0013). An insert into events that started before the new views
--     existed writes to the old ones only: run the migration with the
--     sinks stopped (`herald analytics` migrates before it consumes), or
--     such a block may be missed if it lands after the copy.

-- event_days: events per day by kind and name (uniqExact of cityHash64 of
-- the ids), and rows.
CREATE TABLE IF NOT EXISTS event_days
(
    app String,
    day Date,
    kind String,
    name String,
    events AggregateFunction(uniqExact, UInt64),
    rows AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, kind, name)
SETTINGS index_granularity = 8
;

CREATE MATERIALIZED VIEW IF NOT EXISTS event_days_mv TO event_days AS
SELECT app, date AS day, kind, name, uniqExactState(cityHash64(id)) AS events, sumState(toUInt64(1)) AS rows
FROM events
GROUP BY app, day, kind, name
;

-- journey_days: the journey events per day, journey, event, step, the step
-- or branch they came from and exit reason (journey_daily's keys and
-- states: event ids and users, user id else hwid), and rows.
CREATE TABLE IF NOT EXISTS journey_days
(
    app String,
    day Date,
    journey String,
    name String,
    step String,
    from_step String,
    reason String,
    events AggregateFunction(uniqExact, UInt64),
    users AggregateFunction(uniqExact, UInt64),
    rows AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, journey, name, step, from_step, reason)
SETTINGS index_granularity = 8
;

CREATE MATERIALIZED VIEW IF NOT EXISTS journey_days_mv TO journey_days AS
SELECT app, date AS day,
    arrayElement(attr_values, indexOf(attr_keys, 'journey')) AS journey,
    name,
    arrayElement(attr_values, indexOf(attr_keys, 'step')) AS step,
    arrayElement(attr_values, indexOf(attr_keys, 'from')) AS from_step,
    arrayElement(attr_values, indexOf(attr_keys, 'reason')) AS reason,
    uniqExactState(cityHash64(id)) AS events,
    uniqExactState(cityHash64(if(user_id != '', concat('u:', user_id), concat('h:', hwid)))) AS users,
    sumState(toUInt64(1)) AS rows
FROM events
WHERE kind = 'event' AND name IN ('PW_JourneyEntered', 'PW_JourneyStep', 'PW_JourneyExited')
GROUP BY app, day, journey, name, step, from_step, reason
;

-- event_days_settled, journey_days_settled: the settler's counts, each key's
-- latest (highest rows) kept at merges.
CREATE TABLE IF NOT EXISTS event_days_settled
(
    app String,
    day Date,
    kind String,
    name String,
    events UInt64,
    rows UInt64
)
ENGINE = ReplacingMergeTree(rows)
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, kind, name)
;

CREATE TABLE IF NOT EXISTS journey_days_settled
(
    app String,
    day Date,
    journey String,
    name String,
    step String,
    from_step String,
    reason String,
    events UInt64,
    rows UInt64
)
ENGINE = ReplacingMergeTree(rows)
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, journey, name, step, from_step, reason)
;

-- The old tables as 0002 and 0007 made them: a no-op, unless this
-- migration runs again after it dropped them (then empty, for the copies).
CREATE TABLE IF NOT EXISTS events_daily
(
    app String,
    day Date,
    kind String,
    name String,
    events AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, kind, name)
SETTINGS index_granularity = 128
;

CREATE TABLE IF NOT EXISTS journey_daily
(
    app String,
    day Date,
    journey String,
    name String,
    step String,
    from_step String,
    reason String,
    events AggregateFunction(uniqExact, UInt64),
    users AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, journey, name, step, from_step, reason)
SETTINGS index_granularity = 128
;

INSERT INTO event_days (app, day, kind, name, events, rows)
SELECT app, day, kind, name, events, arrayReduce('sumState', [toUInt64(1)])
FROM events_daily
;

INSERT INTO journey_days (app, day, journey, name, step, from_step, reason, events, users, rows)
SELECT app, day, journey, name, step, from_step, reason, events, users, arrayReduce('sumState', [toUInt64(1)])
FROM journey_daily
;

DROP TABLE IF EXISTS events_daily_mv
;
DROP TABLE IF EXISTS journey_daily_mv
;
DROP TABLE IF EXISTS events_daily
;
DROP TABLE IF EXISTS journey_daily

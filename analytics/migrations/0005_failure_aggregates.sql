-- 0005_failure_aggregates: failed sends and failed statuses in aggregates
-- of their own, which failures_by_error_code reads.
--
-- In sends_daily and statuses_daily the failed rows share granules with the
-- rows of every other state, whose uniqExact sets are far bigger (every
-- dispatch requested, every message sent, delivered, read): ClickHouse
-- reads whole granules, so counting failures deserialized nearly every id
-- of the table (1.1-2.8 s over 10,000,000 messages). These aggregates hold
-- the failed rows only.
--
-- Runs on ClickHouse 18.16 and the current LTS alike; the choices are those
-- of 0002 (uniqExact states of cityHash64 of the ids; PARTITION BY
-- toYYYYMM(day); index_granularity = 128; MATERIALIZED VIEW ... TO with a
-- WHERE, which both accept). Each view is created before the copy of the
-- existing failed states: a row inserted in between reaches the aggregate
-- twice, which a uniqExact state absorbs, as it absorbs a second copy when
-- an interrupted migration runs again.

-- send_failures_daily: dispatches per day (of the request) the dispatcher
-- reported failed, by source and error code.
CREATE TABLE IF NOT EXISTS send_failures_daily
(
    app String,
    day Date,
    source_kind String,
    source_name String,
    error_code Int32,
    dispatches AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, source_kind, source_name, day, error_code)
SETTINGS index_granularity = 128
;

CREATE MATERIALIZED VIEW IF NOT EXISTS send_failures_daily_mv TO send_failures_daily AS
SELECT app, date AS day, source_kind, source_name, error_code, uniqExactState(cityHash64(dispatch_id)) AS dispatches
FROM messages
WHERE state = 'failed'
GROUP BY app, day, source_kind, source_name, error_code
;

INSERT INTO send_failures_daily (app, day, source_kind, source_name, error_code, dispatches)
SELECT app, day, source_kind, source_name, error_code, uniqExactMergeState(dispatches)
FROM sends_daily
WHERE state = 'failed'
GROUP BY app, day, source_kind, source_name, error_code
;

-- status_failures_daily: WhatsApp messages per day with a failed status, by
-- error code (uniqExact of wamids).
CREATE TABLE IF NOT EXISTS status_failures_daily
(
    app String,
    day Date,
    error_code Int32,
    messages AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, error_code)
SETTINGS index_granularity = 128
;

CREATE MATERIALIZED VIEW IF NOT EXISTS status_failures_daily_mv TO status_failures_daily AS
SELECT app, date AS day, error_code, uniqExactState(cityHash64(wamid)) AS messages
FROM statuses
WHERE status = 'failed'
GROUP BY app, day, error_code
;

INSERT INTO status_failures_daily (app, day, error_code, messages)
SELECT app, day, error_code, uniqExactMergeState(messages)
FROM statuses_daily
WHERE status = 'failed'
GROUP BY app, day, error_code

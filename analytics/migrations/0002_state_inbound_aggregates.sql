-- 0002_state_inbound_aggregates: inbound messages, each message's current
-- state, costs, and the daily aggregates.
--
-- Runs on ClickHouse 18.16 and the current LTS alike, which forces (beyond
-- the choices listed in 0001_init):
--   * ALTER TABLE ... ADD COLUMN has no IF NOT EXISTS on 18.16 (a syntax
--     error there): Migrate skips an ADD COLUMN whose column exists
--     already (it asks system.columns), so the statement stays re-runnable;
--   * the daily aggregates are AggregatingMergeTree tables fed by
--     MATERIALIZED VIEW ... TO (both versions accept it) holding
--     uniqExact states of the row ids: a redelivered row adds an id
--     already in the set, so the counts stay exact without FINAL. The
--     sets hold cityHash64 of the ids: merging UInt64 states is 3.5 times
--     faster on 18.16 than String states (which hold 128-bit hashes), and
--     with 10,000,000 ids the chance that any two collide is about 3 in a
--     million (a collision would count two ids once). A
--     SummingMergeTree would count every redelivered copy (18.16 has no
--     insert deduplication for non-replicated tables; the LTS has it only
--     with non_replicated_deduplication_window, which herald does not
--     rely on). SimpleAggregateFunction (19.8+) is not used;
--   * the daily aggregates have index_granularity = 128: their rows are
--     few but fat (a set of ids each), and a granule of the default 8,192
--     rows mixes every source, so a campaign's query would deserialize
--     every set of the table (9 s instead of 0.3 s for one campaign over
--     10,000,000 messages);
--   * FINAL is the only exact read of a ReplacingMergeTree on both (no
--     lightweight deletes, no projections); every FINAL table below has
--     all copies of a row in one partition.

-- statuses: the recipient's country (from the E.164 number, in the sink)
-- and Meta's pricing.type and pricing.pricing_model.
ALTER TABLE statuses ADD COLUMN country String
;
ALTER TABLE statuses ADD COLUMN pricing_type String
;
ALTER TABLE statuses ADD COLUMN pricing_model String
;

-- inbound: one row per inbound WhatsApp message (events of kind inbound),
-- deduplicated by Meta's wamid (a webhook retried by Meta for days may be
-- ingested as a new event; the wamid is the same). keyword is the first
-- word of text (or of payload for button replies), lowercased.
CREATE TABLE IF NOT EXISTS inbound
(
    app String,
    wamid String,
    from_number String,
    phone_number_id String,
    type String,
    text String,
    payload String,
    context_id String,
    profile_name String,
    keyword String,
    country String,
    time DateTime,
    time_ms UInt16,
    date Date,
    event_id String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (app, date, wamid)
;

-- message_state: each dispatch's current state. Every dispatch request
-- (requested), outcome (sent for accepted, failed, expired, in_doubt) and
-- status webhook naming a dispatch id (sent, delivered, read, failed) is
-- a row; ReplacingMergeTree(version) keeps, per dispatch, the row with the
-- highest version = rank << 40 | unix time, so a state advances whatever
-- order the rows arrive in, and a redelivered row (same version) collapses.
-- Ranks: requested 1, in_doubt 2, expired 3, sent 4, failed 5,
-- delivered 6, read 7. No PARTITION BY: a status row does not know the
-- request's date, and all rows of one dispatch must share a partition to
-- collapse. Exact reads use FINAL; when each state was reached is in
-- message_times.
CREATE TABLE IF NOT EXISTS message_state
(
    app String,
    dispatch_id String,
    state String,
    rank UInt8,
    version UInt64,
    time DateTime,
    wamid String,
    error_code Int32,
    origin String,
    event_id String
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (app, dispatch_id)
;

-- message_times: when each dispatch first reached each state, as
-- AggregatingMergeTree states of minIf(unix time, state = ...), filled by
-- a view of message_state (0 = never reached). Read with
-- minIfMerge(read_at) ... GROUP BY dispatch_id. The min is idempotent, so
-- redelivered rows change nothing.
CREATE TABLE IF NOT EXISTS message_times
(
    app String,
    dispatch_id String,
    requested_at AggregateFunction(minIf, UInt32, UInt8),
    sent_at AggregateFunction(minIf, UInt32, UInt8),
    delivered_at AggregateFunction(minIf, UInt32, UInt8),
    read_at AggregateFunction(minIf, UInt32, UInt8),
    failed_at AggregateFunction(minIf, UInt32, UInt8)
)
ENGINE = AggregatingMergeTree()
ORDER BY (app, dispatch_id)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS message_times_mv TO message_times AS
SELECT
    app,
    dispatch_id,
    minIfState(toUInt32(time), state = 'requested') AS requested_at,
    minIfState(toUInt32(time), state = 'sent') AS sent_at,
    minIfState(toUInt32(time), state = 'delivered') AS delivered_at,
    minIfState(toUInt32(time), state = 'read') AS read_at,
    minIfState(toUInt32(time), state = 'failed') AS failed_at
FROM message_state
GROUP BY app, dispatch_id
;

-- costs: one row per billable WhatsApp message (a status with
-- billable = 1), deduplicated by wamid: Meta charges a message once, and
-- each of its sent/delivered/read statuses repeats its pricing. The price
-- columns are filled by the sink from a price table when one is configured
-- (see docs/ANALYTICS.md, "Costs"); price_known = 0 means no rate was known
-- and price_micros is 0. Prices are integer millionths of currency (Decimal
-- arithmetic differs between 18.16 and the LTS). No PARTITION BY, for the
-- reason given at message_state: a message's statuses can straddle a day.
CREATE TABLE IF NOT EXISTS costs
(
    app String,
    wamid String,
    dispatch_id String,
    pricing_category String,
    pricing_type String,
    country String,
    in_window UInt8,
    price_known UInt8,
    currency String,
    price_micros Int64,
    time DateTime,
    date Date,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (app, wamid)
;

-- sends_daily: dispatches per day (of the request) that reached each
-- dispatcher state, by source, template, category, country and error
-- code: uniqExact of dispatch ids, so redelivery counts once.
CREATE TABLE IF NOT EXISTS sends_daily
(
    app String,
    day Date,
    source_kind String,
    source_name String,
    template String,
    category String,
    country String,
    state String,
    error_code Int32,
    dispatches AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, source_kind, source_name, day, template, category, country, state, error_code)
SETTINGS index_granularity = 128
;

CREATE MATERIALIZED VIEW IF NOT EXISTS sends_daily_mv TO sends_daily AS
SELECT app, date AS day, source_kind, source_name, template, category, country, state, error_code,
    uniqExactState(cityHash64(dispatch_id)) AS dispatches
FROM messages
GROUP BY app, day, source_kind, source_name, template, category, country, state, error_code
;

-- events_daily: events per day by kind and name (uniqExact of ids).
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

CREATE MATERIALIZED VIEW IF NOT EXISTS events_daily_mv TO events_daily AS
SELECT app, date AS day, kind, name, uniqExactState(cityHash64(id)) AS events
FROM events
GROUP BY app, day, kind, name
;

-- statuses_daily: WhatsApp statuses per day by status, pricing category,
-- recipient country and error code (uniqExact of wamids).
CREATE TABLE IF NOT EXISTS statuses_daily
(
    app String,
    day Date,
    status String,
    pricing_category String,
    country String,
    error_code Int32,
    messages AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, status, pricing_category, country, error_code)
SETTINGS index_granularity = 128
;

CREATE MATERIALIZED VIEW IF NOT EXISTS statuses_daily_mv TO statuses_daily AS
SELECT app, date AS day, status, pricing_category, country, error_code, uniqExactState(cityHash64(wamid)) AS messages
FROM statuses
GROUP BY app, day, status, pricing_category, country, error_code
;

-- inbound_hourly: inbound messages per day and hour (UTC) by type and
-- keyword (uniqExact of wamids).
CREATE TABLE IF NOT EXISTS inbound_hourly
(
    app String,
    day Date,
    hour UInt8,
    type String,
    keyword String,
    messages AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, hour, type, keyword)
SETTINGS index_granularity = 128
;

CREATE MATERIALIZED VIEW IF NOT EXISTS inbound_hourly_mv TO inbound_hourly AS
SELECT app, date AS day, toHour(time) AS hour, type, keyword, uniqExactState(cityHash64(wamid)) AS messages
FROM inbound
GROUP BY app, day, hour, type, keyword

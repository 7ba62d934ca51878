-- 0003_message_facts: messages' states attributed to their source at write
-- time, so that the funnel, read-rate, time-to-read and cost queries read a
-- small daily aggregate instead of joining statuses to messages per
-- dispatch (over 10,000,000 messages that join takes tens of seconds on
-- 18.16: FINAL reads a single stream there, and a GROUP BY of 10,000,000
-- string keys is no faster).
--
-- The sink looks a status's dispatch up in dispatch_meta (written from
-- dispatch requests and outcomes before any lookup of the same batch) and
-- writes a message_facts row per state it implies. A status whose dispatch
-- is not known yet waits in pending_facts; the sink resolves it when the
-- dispatch request or outcome arrives (see analytics/attribute.go).
-- Runs on 18.16 and the LTS alike; the choices are those of 0001 and 0002.

-- wamids: the dispatch of each wamid Herald sent (from accepted outcomes
-- and statuses), for the lookup of inbound replies by their context id.
CREATE TABLE IF NOT EXISTS wamids
(
    app String,
    wamid String,
    dispatch_id String
)
ENGINE = ReplacingMergeTree()
ORDER BY (app, wamid)
SETTINGS index_granularity = 256
;

-- dispatch_meta: what every dispatch was, by dispatch id, for lookups of
-- a batch's statuses (WHERE app = ? AND dispatch_id IN (...)): a small
-- index granularity so that a lookup reads few rows. due is when the
-- message was due to be sent (the request's send_at, else its creation).
CREATE TABLE IF NOT EXISTS dispatch_meta
(
    app String,
    dispatch_id String,
    day Date,
    due DateTime,
    source_kind String,
    source_name String,
    template String,
    category String,
    country String
)
ENGINE = ReplacingMergeTree()
ORDER BY (app, dispatch_id)
SETTINGS index_granularity = 256
;

-- message_facts: one row per state a dispatch reached, with its source:
-- requested (a request), sent (an accepted outcome, or a sent, delivered
-- or read status: each implies it was sent), delivered (a delivered or
-- read status), read, failed, expired, in_doubt (outcomes), replied (an
-- inbound message whose context is the message) and billed (a billable
-- status, with its price). detail is the time-to-read bucket of read, the
-- pricing category of billed and the error code of failed; amount is the
-- price of billed in millionths of currency (-1 when no rate was known).
-- day is the request's day, shared by every
-- fact of a dispatch; copies collapse on the sorting key. The source comes
-- first in the sorting keys: a campaign's report reads only its granules
-- (with the day first, every granule mixes sources and is read whole).
CREATE TABLE IF NOT EXISTS message_facts
(
    app String,
    day Date,
    source_kind String,
    source_name String,
    template String,
    category String,
    country String,
    dispatch_id String,
    state String,
    detail String,
    amount Int64,
    currency String,
    time DateTime
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, source_kind, source_name, day, dispatch_id, state)
;

-- funnel_daily: dispatches per day and source that reached each state
-- (uniqExact of dispatch ids: exact under redelivery), by the fact's
-- detail and amount.
CREATE TABLE IF NOT EXISTS funnel_daily
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
    dispatches AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, source_kind, source_name, day, template, category, country, state, detail, amount, currency)
SETTINGS index_granularity = 128
;

CREATE MATERIALIZED VIEW IF NOT EXISTS funnel_daily_mv TO funnel_daily AS
SELECT app, day, source_kind, source_name, template, category, country, state, detail, amount, currency,
    uniqExactState(cityHash64(dispatch_id)) AS dispatches
FROM message_facts
GROUP BY app, day, source_kind, source_name, template, category, country, state, detail, amount, currency
;

-- pending_facts: facts of statuses whose dispatch was not in dispatch_meta
-- yet (ref d:<dispatch id>) and of inbound replies whose wamid was not in
-- wamids yet (ref w:<wamid>). resolved goes to 1 (a higher version) once
-- the sink wrote the facts; read with FINAL.
CREATE TABLE IF NOT EXISTS pending_facts
(
    app String,
    ref String,
    state String,
    detail String,
    amount Int64,
    currency String,
    time DateTime,
    resolved UInt8,
    version UInt8
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (app, ref, state, detail)

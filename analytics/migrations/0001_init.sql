-- 0001_init: the tables the analytics sink writes.
--
-- This schema runs on ClickHouse 18.16 (Debian bookworm's package) and on
-- the current LTS alike, which forces:
--   * times as DateTime (seconds, UTC) plus time_ms UInt16 for the
--     milliseconds, not DateTime64 (20.1+);
--   * attributes and tags as JSON String columns, attributes also as the
--     parallel arrays attr_keys / attr_values, not Map (21.1+);
--     read one with arrayElement(attr_values, indexOf(attr_keys, 'plan'));
--   * no TTL (19.6+), no LowCardinality (experimental before 19.x);
--   * PARTITION BY toYYYYMM(date), date being the UTC date of the row.
-- Dedup: ReplacingMergeTree keyed by deterministic ids; rows delivered twice
-- collapse at merge time, so exact queries read with FINAL.
-- Statements are re-runnable (IF NOT EXISTS): ClickHouse has no
-- transactions and an interrupted migration runs again from the top.

-- events: every record of herald.events.v1, one row per event id. Status
-- events also go to statuses, inbound messages fill the inbound_* columns.
-- device_type is Pushwoosh's number; received is 1970-01-01 when unknown.
CREATE TABLE IF NOT EXISTS events
(
    id String,
    app String,
    kind String,
    name String,
    time DateTime,
    time_ms UInt16,
    date Date,
    received DateTime,
    hwid String,
    user_id String,
    device_type UInt8,
    language String,
    timezone String,
    country String,
    attr_keys Array(String),
    attr_values Array(String),
    attributes String,
    tags String,
    inbound_from String,
    inbound_wamid String,
    inbound_type String,
    inbound_text String,
    inbound_profile_name String,
    phone_number_id String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (app, date, kind, id)
;

-- statuses: one row per WhatsApp status (sent, delivered, read, failed) of a
-- message, deduplicated on (wamid, status) so that Meta's webhook retries
-- count once. dispatch_id links to messages.dispatch_id, wamid to
-- messages.provider_id.
CREATE TABLE IF NOT EXISTS statuses
(
    app String,
    wamid String,
    status String,
    recipient String,
    dispatch_id String,
    pricing_category String,
    billable UInt8,
    error_code Int32,
    error_title String,
    time DateTime,
    date Date,
    event_id String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (app, date, wamid, status)
;

-- messages: one row per dispatch request, from herald.outcomes.v1; the
-- latest outcome (by time) wins. date is the UTC date of requested (the
-- request's creation, the same for every outcome of one request), or of
-- time when requested is unknown, so every outcome of one dispatch lands in
-- one partition and collapses.
CREATE TABLE IF NOT EXISTS messages
(
    dispatch_id String,
    app String,
    channel String,
    sender String,
    recipient String,
    country String,
    state String,
    provider_id String,
    template String,
    category String,
    source_kind String,
    source_name String,
    source_event_id String,
    error_code Int32,
    error_message String,
    attempts UInt16,
    requested DateTime,
    time DateTime,
    date Date
)
ENGINE = ReplacingMergeTree(time)
PARTITION BY toYYYYMM(date)
ORDER BY (app, date, dispatch_id)

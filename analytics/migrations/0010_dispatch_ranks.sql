-- 0010_dispatch_ranks: the highest-ranked state each dispatch reached, one
-- row per dispatch once merged, which current_states reads instead of
-- grouping every fact by dispatch id (41,000,000 facts grouped by a string
-- over 10,000,000 messages: 5-12 s on 18.16).
--
-- Runs on ClickHouse 18.16 and the current LTS alike, which forces:
--   * an AggregatingMergeTree of maxState(rank): SimpleAggregateFunction
--     (19.8+) is not there, and a ReplacingMergeTree would need FINAL,
--     which 18.16 reads in one stream; max is idempotent, so redelivered
--     facts change nothing;
--   * the dispatch as cityHash64 of its id (the query groups UInt64 keys,
--     several times faster than strings; with 10,000,000 dispatches the
--     chance that two share a hash is about 3 in a million, as for the
--     uniqExact sets of 0002);
--   * the sorting key of message_facts (source, then day), so that one
--     campaign or one day reads few granules.
-- The view is created before the copy of the existing facts: facts inserted
-- in between reach the table twice, which max absorbs, as it absorbs a
-- second copy when an interrupted migration runs again.
-- Ranks: requested 1, in_doubt 2, expired 3, sent 4, failed 5, delivered 6,
-- read 7 (message_state's; 0 for the other facts, which the query skips).
CREATE TABLE IF NOT EXISTS dispatch_ranks
(
    app String,
    source_kind String,
    source_name String,
    day Date,
    dispatch UInt64,
    rank AggregateFunction(max, UInt8)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (app, source_kind, source_name, day, dispatch)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS dispatch_ranks_mv TO dispatch_ranks AS
SELECT app, source_kind, source_name, day, cityHash64(dispatch_id) AS dispatch,
    maxState(toUInt8(indexOf(['requested', 'in_doubt', 'expired', 'sent', 'failed', 'delivered', 'read'], state))) AS rank
FROM message_facts
WHERE state IN ('requested', 'in_doubt', 'expired', 'sent', 'failed', 'delivered', 'read')
GROUP BY app, source_kind, source_name, day, dispatch
;

INSERT INTO dispatch_ranks (app, source_kind, source_name, day, dispatch, rank)
SELECT app, source_kind, source_name, day, cityHash64(dispatch_id) AS dispatch,
    maxState(toUInt8(indexOf(['requested', 'in_doubt', 'expired', 'sent', 'failed', 'delivered', 'read'], state)))
FROM message_facts
WHERE state IN ('requested', 'in_doubt', 'expired', 'sent', 'failed', 'delivered', 'read')
GROUP BY app, source_kind, source_name, day, dispatch

-- Every node's control re-read (every `control_reread_secs`) looks for the replays
-- whose record says running (`RUNNING_REPLAYS_QUERY`). There is one record per
-- integration that ever replayed and at most a few run at a time: a partial index
-- of the running ones only lets the look-up read those instead of every record.
-- Its predicate is the query's condition, expression for expression.
CREATE INDEX replays_running ON replays (integration)
    WHERE (doc -> 'progress' ->> 'state') = 'running';

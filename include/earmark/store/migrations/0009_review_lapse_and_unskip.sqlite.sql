-- The review trail records 'lapse' and 'unskip' (see the PostgreSQL file). SQLite cannot change
-- a CHECK constraint in place, so the table is rebuilt in SQLite's documented order, ids kept.

CREATE TABLE review_events_rebuilt (
    id        {{pk}},
    item_id   BIGINT NOT NULL REFERENCES review_queue (id),
    action    TEXT NOT NULL CONSTRAINT review_events_action_check
              CHECK (action IN ('claim', 'release', 'skip', 'decide', 'correct', 'lapse',
                                'unskip')),
    reviewer  TEXT NOT NULL,
    decision  TEXT,
    note      TEXT,
    at        {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT review_events_decision_check
        CHECK ((action IN ('decide', 'correct')) = (decision IS NOT NULL))
);
INSERT INTO review_events_rebuilt (id, item_id, action, reviewer, decision, note, at)
SELECT id, item_id, action, reviewer, decision, note, at FROM review_events;
DROP TABLE review_events;
ALTER TABLE review_events_rebuilt RENAME TO review_events;
CREATE INDEX review_events_item ON review_events (item_id, id);
CREATE INDEX review_events_reviewer ON review_events (reviewer, at);

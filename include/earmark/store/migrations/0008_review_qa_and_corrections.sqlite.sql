-- Second reviews and corrections (see the PostgreSQL file for what each change means). SQLite
-- cannot change a UNIQUE or CHECK constraint in place, so both tables are rebuilt in SQLite's
-- documented order (new table, copy, drop, rename), ids kept.

CREATE TABLE review_queue_rebuilt (
    id            {{pk}},
    file_id       BIGINT NOT NULL REFERENCES audio_files (id),
    policy        TEXT NOT NULL,
    score         REAL NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'claimed', 'resolved')),
    claimed_by    TEXT,
    claimed_until {{ts}},
    decision      TEXT,
    note          TEXT,
    created_at    {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    resolved_at   {{ts}},
    kind          TEXT NOT NULL DEFAULT 'flag' CHECK (kind IN ('flag', 'qa', 'sample')),
    first_item_id BIGINT REFERENCES review_queue (id),
    CONSTRAINT review_queue_qa_has_first CHECK ((kind = 'qa') = (first_item_id IS NOT NULL)),
    CONSTRAINT review_queue_file_policy_kind UNIQUE (file_id, policy, kind)
);
INSERT INTO review_queue_rebuilt
    (id, file_id, policy, score, status, claimed_by, claimed_until, decision, note, created_at,
     resolved_at)
SELECT id, file_id, policy, score, status, claimed_by, claimed_until, decision, note, created_at,
       resolved_at
FROM review_queue;
DROP TABLE review_queue;
ALTER TABLE review_queue_rebuilt RENAME TO review_queue;
CREATE INDEX review_queue_status ON review_queue (status);
CREATE INDEX review_queue_first_item ON review_queue (first_item_id);

CREATE TABLE review_events_rebuilt (
    id        {{pk}},
    item_id   BIGINT NOT NULL REFERENCES review_queue (id),
    action    TEXT NOT NULL CONSTRAINT review_events_action_check
              CHECK (action IN ('claim', 'release', 'skip', 'decide', 'correct')),
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

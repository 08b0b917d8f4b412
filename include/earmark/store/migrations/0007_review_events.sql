-- The RA review's audit trail, append-only: every claim, release, skip and decision, with who
-- and when (a decision's note too). The review queue row holds the current state; this holds
-- how it got there. A skipped item is not offered to the same reviewer again.

CREATE TABLE review_events (
    id        {{pk}},
    item_id   BIGINT NOT NULL REFERENCES review_queue (id),
    action    TEXT NOT NULL CHECK (action IN ('claim', 'release', 'skip', 'decide')),
    reviewer  TEXT NOT NULL,
    decision  TEXT,
    note      TEXT,
    at        {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CHECK ((action = 'decide') = (decision IS NOT NULL))
);
CREATE INDEX review_events_item ON review_events (item_id, id);
CREATE INDEX review_events_reviewer ON review_events (reviewer, at);

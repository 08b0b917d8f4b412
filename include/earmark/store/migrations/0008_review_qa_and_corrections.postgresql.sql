-- Second reviews and corrections.
--   review_queue.kind           'flag': a flagged item's review (as before);
--                               'qa': a blind second review of a decided flag (first_item_id);
--                               'sample': a review of an item scored BELOW the threshold,
--                               sampled to estimate what the threshold misses.
--   review_queue UNIQUE         one item per file, policy and kind (was per file and policy).
--   review_events.action        adds 'correct': a reviewer changing their own decision within
--                               the correction window, kept as an event of its own.

ALTER TABLE review_queue ADD COLUMN kind TEXT NOT NULL DEFAULT 'flag'
    CHECK (kind IN ('flag', 'qa', 'sample'));
ALTER TABLE review_queue ADD COLUMN first_item_id BIGINT REFERENCES review_queue (id);
ALTER TABLE review_queue ADD CONSTRAINT review_queue_qa_has_first
    CHECK ((kind = 'qa') = (first_item_id IS NOT NULL));
ALTER TABLE review_queue DROP CONSTRAINT review_queue_file_id_policy_key;
ALTER TABLE review_queue ADD CONSTRAINT review_queue_file_policy_kind
    UNIQUE (file_id, policy, kind);
CREATE INDEX review_queue_first_item ON review_queue (first_item_id);

ALTER TABLE review_events DROP CONSTRAINT review_events_action_check;
ALTER TABLE review_events DROP CONSTRAINT review_events_check;
ALTER TABLE review_events ADD CONSTRAINT review_events_action_check
    CHECK (action IN ('claim', 'release', 'skip', 'decide', 'correct'));
ALTER TABLE review_events ADD CONSTRAINT review_events_decision_check
    CHECK ((action IN ('decide', 'correct')) = (decision IS NOT NULL));

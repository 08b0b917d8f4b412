-- The review trail records two more actions:
--   'lapse'   a claim whose lease ended without a decision went back to the queue (the reviewer
--             is the one whose claim lapsed; at is when the lease ended);
--   'unskip'  a reviewer took back their own skip within the undo window (the item is offered
--             to them again).
ALTER TABLE review_events DROP CONSTRAINT review_events_action_check;
ALTER TABLE review_events ADD CONSTRAINT review_events_action_check
    CHECK (action IN ('claim', 'release', 'skip', 'decide', 'correct', 'lapse', 'unskip'));

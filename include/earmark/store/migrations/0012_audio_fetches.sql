-- Who listened to a recording: every time a reviewer's browser fetches an item's audio (each
-- range request of the player too), with the claim it was fetched under. The audit trail of
-- access, apart from review_events (the decisions' trail), so that seeking through a recording
-- does not crowd the history of an item.
CREATE TABLE audio_fetches (
    id             {{pk}},
    item_id        BIGINT NOT NULL REFERENCES review_queue (id),
    file_id        BIGINT NOT NULL REFERENCES audio_files (id),
    claim_event_id BIGINT REFERENCES review_events (id),
    reviewer       TEXT NOT NULL,
    byte_range     TEXT,
    at             {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX audio_fetches_file ON audio_fetches (file_id, at);
CREATE INDEX audio_fetches_reviewer ON audio_fetches (reviewer, at);

-- Versions of policies and models, never mixed (see the PostgreSQL file for what each change
-- means). SQLite cannot change a UNIQUE or CHECK constraint in place, so review_queue is rebuilt
-- in SQLite's documented order (new table, copy, drop, rename), ids kept.

ALTER TABLE labels ADD COLUMN superseded_at {{ts}};
CREATE INDEX labels_file_policy ON labels (file_id, policy);
UPDATE labels SET superseded_at = CURRENT_TIMESTAMP
WHERE EXISTS (SELECT 1 FROM labels n WHERE n.file_id = labels.file_id AND n.policy = labels.policy
              AND (n.created_at > labels.created_at
                   OR (n.created_at = labels.created_at AND n.id > labels.id)));

CREATE TABLE review_queue_rebuilt (
    id            {{pk}},
    file_id       BIGINT NOT NULL REFERENCES audio_files (id),
    policy        TEXT NOT NULL,
    score         REAL NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'claimed', 'resolved', 'withdrawn')),
    claimed_by    TEXT,
    claimed_until {{ts}},
    decision      TEXT,
    note          TEXT,
    created_at    {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    resolved_at   {{ts}},
    kind          TEXT NOT NULL DEFAULT 'flag' CHECK (kind IN ('flag', 'qa', 'sample')),
    first_item_id BIGINT REFERENCES review_queue (id),
    policy_sha    TEXT NOT NULL,
    model         TEXT NOT NULL,
    CONSTRAINT review_queue_qa_has_first CHECK ((kind = 'qa') = (first_item_id IS NOT NULL)),
    CONSTRAINT review_queue_file_version_kind UNIQUE (file_id, policy, policy_sha, model, kind)
);
INSERT INTO review_queue_rebuilt
    (id, file_id, policy, score, status, claimed_by, claimed_until, decision, note, created_at,
     resolved_at, kind, first_item_id, policy_sha, model)
SELECT q.id, q.file_id, q.policy, q.score, q.status, q.claimed_by, q.claimed_until, q.decision,
       q.note, q.created_at, q.resolved_at, q.kind, q.first_item_id,
       coalesce(
           (SELECT l.policy_sha FROM labels l WHERE l.file_id = q.file_id AND l.policy = q.policy
            AND l.created_at <= q.created_at ORDER BY l.created_at DESC, l.id DESC LIMIT 1),
           (SELECT l.policy_sha FROM labels l WHERE l.file_id = q.file_id AND l.policy = q.policy
            ORDER BY l.created_at DESC, l.id DESC LIMIT 1),
           'unknown'),
       coalesce(
           (SELECT l.model FROM labels l WHERE l.file_id = q.file_id AND l.policy = q.policy
            AND l.created_at <= q.created_at ORDER BY l.created_at DESC, l.id DESC LIMIT 1),
           (SELECT l.model FROM labels l WHERE l.file_id = q.file_id AND l.policy = q.policy
            ORDER BY l.created_at DESC, l.id DESC LIMIT 1),
           'unknown')
FROM review_queue q;
DROP TABLE review_queue;
ALTER TABLE review_queue_rebuilt RENAME TO review_queue;
CREATE INDEX review_queue_status ON review_queue (status);
CREATE INDEX review_queue_first_item ON review_queue (first_item_id);
UPDATE review_queue
SET policy_sha = (SELECT f.policy_sha FROM review_queue f WHERE f.id = review_queue.first_item_id),
    model = (SELECT f.model FROM review_queue f WHERE f.id = review_queue.first_item_id)
WHERE kind = 'qa';
UPDATE review_queue SET status = 'withdrawn', claimed_by = NULL, claimed_until = NULL
WHERE status IN ('pending', 'claimed') AND kind <> 'qa'
  AND EXISTS (SELECT 1 FROM labels l
              WHERE l.file_id = review_queue.file_id AND l.policy = review_queue.policy
                AND l.policy_sha = review_queue.policy_sha AND l.model = review_queue.model
                AND l.superseded_at IS NOT NULL);

CREATE TABLE rescreens (
    id         {{pk}},
    at         {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor      TEXT NOT NULL,
    first_day  {{date}} NOT NULL,
    last_day   {{date}} NOT NULL,
    policy     TEXT,
    model      TEXT NOT NULL,
    versions   TEXT NOT NULL,
    files      INTEGER NOT NULL
);

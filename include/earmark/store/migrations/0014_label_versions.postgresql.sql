-- Versions of policies and models, never mixed:
--   labels.superseded_at       set when the same file and policy is scored under another policy
--                              version or model (a rescreen, an edited policy, a new model): the
--                              label is kept, marked superseded, never overwritten
--   review_queue.policy_sha,   the version an item was queued under (a qa item: its first
--   review_queue.model         item's); one item per file, policy, version, model and kind, so a
--                              new version's flag is a new item beside the decided old one
--   review_queue.status        adds 'withdrawn': an item not yet decided whose label was
--                              superseded leaves the queue (decided items stay 'resolved' and
--                              count under their own version)
--   rescreens                  `earmark rescreen`, append-only: who sent which days back to the
--                              GPU stage, under which versions (JSON policy -> sha256), and how
--                              many recordings
-- Items from before: their version is that of the file's latest label under the same policy.

ALTER TABLE labels ADD COLUMN superseded_at {{ts}};
CREATE INDEX labels_file_policy ON labels (file_id, policy);

ALTER TABLE review_queue ADD COLUMN policy_sha TEXT;
ALTER TABLE review_queue ADD COLUMN model TEXT;
UPDATE review_queue q SET
    policy_sha = coalesce((SELECT l.policy_sha FROM labels l WHERE l.file_id = q.file_id
                           AND l.policy = q.policy ORDER BY l.id DESC LIMIT 1), 'unknown'),
    model = coalesce((SELECT l.model FROM labels l WHERE l.file_id = q.file_id
                      AND l.policy = q.policy ORDER BY l.id DESC LIMIT 1), 'unknown');
ALTER TABLE review_queue ALTER COLUMN policy_sha SET NOT NULL;
ALTER TABLE review_queue ALTER COLUMN model SET NOT NULL;
ALTER TABLE review_queue DROP CONSTRAINT review_queue_file_policy_kind;
ALTER TABLE review_queue ADD CONSTRAINT review_queue_file_version_kind
    UNIQUE (file_id, policy, policy_sha, model, kind);
ALTER TABLE review_queue DROP CONSTRAINT review_queue_status_check;
ALTER TABLE review_queue ADD CONSTRAINT review_queue_status_check
    CHECK (status IN ('pending', 'claimed', 'resolved', 'withdrawn'));

-- Rescreens (`earmark rescreen`), append-only: who asked for which days to be screened again,
-- under which versions, and how many recordings that sent back to the GPU stage.
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

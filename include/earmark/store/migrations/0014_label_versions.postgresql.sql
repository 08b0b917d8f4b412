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
-- Labels from before: of a file and policy scored under several versions, the newest stays
-- current and the others are marked superseded. Items from before: their version is that of
-- the newest label of the file and policy made before the item (else the newest), a second
-- review's that of its first item; an undecided item of a superseded version is withdrawn.

ALTER TABLE labels ADD COLUMN superseded_at {{ts}};
CREATE INDEX labels_file_policy ON labels (file_id, policy);
UPDATE labels SET superseded_at = CURRENT_TIMESTAMP
WHERE EXISTS (SELECT 1 FROM labels n WHERE n.file_id = labels.file_id AND n.policy = labels.policy
              AND (n.created_at > labels.created_at
                   OR (n.created_at = labels.created_at AND n.id > labels.id)));

ALTER TABLE review_queue ADD COLUMN policy_sha TEXT;
ALTER TABLE review_queue ADD COLUMN model TEXT;
UPDATE review_queue q SET
    policy_sha = coalesce(
        (SELECT l.policy_sha FROM labels l WHERE l.file_id = q.file_id AND l.policy = q.policy
         AND l.created_at <= q.created_at ORDER BY l.created_at DESC, l.id DESC LIMIT 1),
        (SELECT l.policy_sha FROM labels l WHERE l.file_id = q.file_id AND l.policy = q.policy
         ORDER BY l.created_at DESC, l.id DESC LIMIT 1),
        'unknown'),
    model = coalesce(
        (SELECT l.model FROM labels l WHERE l.file_id = q.file_id AND l.policy = q.policy
         AND l.created_at <= q.created_at ORDER BY l.created_at DESC, l.id DESC LIMIT 1),
        (SELECT l.model FROM labels l WHERE l.file_id = q.file_id AND l.policy = q.policy
         ORDER BY l.created_at DESC, l.id DESC LIMIT 1),
        'unknown');
UPDATE review_queue q SET policy_sha = f.policy_sha, model = f.model
FROM review_queue f WHERE q.kind = 'qa' AND f.id = q.first_item_id;
ALTER TABLE review_queue ALTER COLUMN policy_sha SET NOT NULL;
ALTER TABLE review_queue ALTER COLUMN model SET NOT NULL;
ALTER TABLE review_queue DROP CONSTRAINT review_queue_file_policy_kind;
ALTER TABLE review_queue ADD CONSTRAINT review_queue_file_version_kind
    UNIQUE (file_id, policy, policy_sha, model, kind);
ALTER TABLE review_queue DROP CONSTRAINT review_queue_status_check;
ALTER TABLE review_queue ADD CONSTRAINT review_queue_status_check
    CHECK (status IN ('pending', 'claimed', 'resolved', 'withdrawn'));
UPDATE review_queue SET status = 'withdrawn', claimed_by = NULL, claimed_until = NULL
WHERE status IN ('pending', 'claimed') AND kind <> 'qa'
  AND EXISTS (SELECT 1 FROM labels l
              WHERE l.file_id = review_queue.file_id AND l.policy = review_queue.policy
                AND l.policy_sha = review_queue.policy_sha AND l.model = review_queue.model
                AND l.superseded_at IS NOT NULL);

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

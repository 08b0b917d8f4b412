-- Every policy text a label was scored under, by its sha256 (labels.policy_sha,
-- review_queue.policy_sha): the item page shows a reviewer the text their item was scored
-- under, not today's file when it was edited since, and an auditor can read what produced any
-- label. Written by the GPU stage with the labels, once per version; never updated. `text` is
-- the text as the classifier read it (the file's surrounding whitespace stripped; the sha256 is
-- of the file's bytes).
CREATE TABLE policy_versions (
    sha256        TEXT NOT NULL,
    policy        TEXT NOT NULL,
    text          TEXT NOT NULL,
    first_used_at {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (sha256, policy)
);

-- The classifier's labels (earmark.gpu.classify, their one writer). A label belongs to a version:
-- the policy's sha256 and the classifier model. Scoring a file under a policy again with another
-- version marks the earlier label superseded; it is kept, never overwritten.

-- name: supersede_other_versions
UPDATE labels SET superseded_at = CURRENT_TIMESTAMP
WHERE file_id = :f AND policy = :p AND superseded_at IS NULL
  AND NOT (policy_sha = :sha AND model = :m);

-- name: upsert_label
-- The same version scored again (a retried task, a reprocess) updates its label, which is
-- current again if it had been superseded (a policy edited back to an earlier text).
INSERT INTO labels (file_id, policy, policy_sha, model, score, label)
VALUES (:f, :p, :sha, :m, :s, :l)
ON CONFLICT (file_id, policy, policy_sha, model) DO UPDATE SET
    score = excluded.score, label = excluded.label, created_at = CURRENT_TIMESTAMP,
    superseded_at = NULL;

-- name: mark_classified
-- The unit's transcribed files with a current label by the model under every current policy
-- (a label of a policy since removed from the policies folder does not count).
UPDATE audio_files SET status = 'classified', updated_at = CURRENT_TIMESTAMP
WHERE status = 'transcribed'
  AND id IN (SELECT file_id FROM work_unit_files WHERE unit_id = :b)
  AND (SELECT count(DISTINCT l.policy) FROM labels l
       WHERE l.file_id = audio_files.id AND l.model = :m AND l.superseded_at IS NULL
         AND l.policy IN :policies) >= :n;

-- name: record_policy_version
-- The text of the policy version the labels are scored under, once per version.
INSERT INTO policy_versions (sha256, policy, text) VALUES (:sha, :p, :text)
ON CONFLICT (sha256, policy) DO NOTHING;

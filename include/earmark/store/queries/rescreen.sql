-- Rescreening past days under the current policy versions and model (earmark.versions.rescreen).
-- Ids, days and versions only: never transcript text or names of recordings.

-- name: screened_files
-- The days' screened recordings with each current label's version (a file with no label under
-- a policy has none here), whether a transcript by the current ASR model is kept, and whether
-- its lifecycle holds it back: an erasure or a retention intent under way, or its transcript or
-- labels removed by retention (screening it again would bring back what retention took).
SELECT f.id, a.run_date, f.path, f.audio_erased_at, l.policy, l.policy_sha, l.model,
       (SELECT count(*) FROM transcripts t WHERE t.file_id = f.id AND t.model = :asr_model)
           AS transcripts,
       (SELECT count(*) FROM erasures e
        WHERE e.file_id = f.id
          AND (e.status = 'intended'
               OR (e.scope = 'retention' AND e.target IN ('transcripts', 'labels')))) AS held_back
FROM audio_files f
JOIN archives a ON a.id = f.archive_id
LEFT JOIN labels l ON l.file_id = f.id AND l.superseded_at IS NULL
WHERE a.run_date BETWEEN :first AND :last AND f.status = 'classified'
ORDER BY a.run_date, f.id;

-- name: send_back
-- A screened recording back to the GPU stage: 'transcribed' when its transcript is kept (only
-- the classifier runs), 'ready' when it must be transcribed again; checked again here, as the
-- plan may be minutes old: not when its audio went or an erasure or retention intent began.
UPDATE audio_files SET status = :status, updated_at = CURRENT_TIMESTAMP
WHERE id = :file_id AND status = 'classified' AND audio_erased_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.file_id = :file_id AND e.status = 'intended');

-- name: record_rescreen
INSERT INTO rescreens (actor, first_day, last_day, policy, model, versions, files)
VALUES (:actor, :first, :last, :policy, :model, :versions, :files)
RETURNING id;

-- name: rescreens
-- The audit: every rescreen, oldest first.
SELECT id, at, actor, first_day, last_day, policy, model, versions, files FROM rescreens
ORDER BY id;

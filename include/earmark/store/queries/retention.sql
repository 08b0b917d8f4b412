-- Retention per kind of data (earmark.lifecycle.retention): what each rule takes, and what is
-- held. Ids, hashes, counts and bytes only: never transcript text or names of recordings.
--
-- Every rule leaves alone a recording not yet screened (status 'ready' or 'transcribed') and one
-- an erasure is under way for (an 'intended' row in erasures). "Flagged": a label 1 (superseded
-- or not) or a review item of any kind. "Open": a review item 'pending' or 'claimed' (the view
-- recording_retention, migration 0018, says each of these once per recording). "Settled"
-- (what the flagged audio, transcripts, labels and reviews rules count from): the later of the
-- run date and the last review decision of the recording's items (resolved_at). A rule's time
-- is up when the run date lies before :cutoff_day and no decision on or after :cutoff_ts (that
-- day's local midnight).
-- A run takes them in batches of :limit recordings, each after the last one's id (:after); the
-- dry run and the figures pass 0 and a bound no day reaches.

-- name: due_unflagged_audio
-- Audio files on disk of recordings never flagged, counted from their run date (a quarantined
-- recording, refused at intake, is one: its file in quarantine/ goes by this rule).
SELECT file_id, archive_id, path, sha256, bytes
FROM recording_retention
WHERE audio_erased_at IS NULL AND status IN ('classified', 'quarantined') AND flagged = 0
  AND erasing = 0 AND run_date < :cutoff_day
  AND file_id > :after
ORDER BY file_id
LIMIT :limit;

-- name: due_flagged_audio
-- Audio files on disk of flagged recordings with no open item, settled before the cutoff (no
-- decision on or after it; with no decision at all, the run date alone decides).
SELECT file_id, archive_id, path, sha256, bytes
FROM recording_retention
WHERE audio_erased_at IS NULL AND status IN ('classified', 'quarantined') AND flagged = 1
  AND open_items = 0 AND erasing = 0 AND run_date < :cutoff_day
  AND (last_decision IS NULL OR last_decision < :cutoff_ts)
  AND file_id > :after
ORDER BY file_id
LIMIT :limit;

-- name: due_transcripts
-- Transcripts of recordings with no open item, settled before the cutoff.
SELECT file_id, archive_id, path, sha256, 0 AS bytes
FROM recording_retention
WHERE status IN ('classified', 'quarantined')
  AND EXISTS (SELECT 1 FROM transcripts t WHERE t.file_id = recording_retention.file_id)
  AND open_items = 0 AND erasing = 0 AND run_date < :cutoff_day
  AND (last_decision IS NULL OR last_decision < :cutoff_ts)
  AND file_id > :after
ORDER BY file_id
LIMIT :limit;

-- name: due_labels
-- Labels of recordings with no open item, settled before the cutoff.
SELECT file_id, archive_id, path, sha256, 0 AS bytes
FROM recording_retention
WHERE status IN ('classified', 'quarantined')
  AND EXISTS (SELECT 1 FROM labels l WHERE l.file_id = recording_retention.file_id)
  AND open_items = 0 AND erasing = 0 AND run_date < :cutoff_day
  AND (last_decision IS NULL OR last_decision < :cutoff_ts)
  AND file_id > :after
ORDER BY file_id
LIMIT :limit;

-- name: due_reviews
-- Review items (with their review_events and audio_fetches) of recordings whose audio is gone
-- and none of whose items is open, counted from the last decision: the audit trail of who
-- decided and who listened outlives the audio.
SELECT file_id, archive_id, path, sha256, 0 AS bytes
FROM recording_retention
WHERE audio_erased_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM review_queue r WHERE r.file_id = recording_retention.file_id)
  AND open_items = 0 AND erasing = 0 AND run_date < :cutoff_day
  AND (last_decision IS NULL OR last_decision < :cutoff_ts)
  AND file_id > :after
ORDER BY file_id
LIMIT :limit;

-- name: held
-- What the results DB holds per kind now: recordings with audio on disk (flagged or not, in
-- flight too), and recordings with transcripts, labels, review items; bytes of the audio files.
SELECT CASE WHEN flagged = 1 THEN 'flagged_audio' ELSE 'unflagged_audio' END AS kind,
       count(*) AS n, coalesce(sum(bytes), 0) AS bytes
FROM recording_retention
WHERE audio_erased_at IS NULL
GROUP BY flagged
UNION ALL
SELECT 'transcripts', count(DISTINCT file_id), 0 FROM transcripts
UNION ALL
SELECT 'labels', count(DISTINCT file_id), 0 FROM labels
UNION ALL
SELECT 'reviews', count(DISTINCT file_id), 0 FROM review_queue;

-- name: archives_by_id
-- The archives whose delivered bytes lie in a processed/ day folder (archive-ID), and whether
-- an erasure on request of theirs is under way (it removes them itself).
SELECT a.id, a.sha256,
       (SELECT count(*) FROM erasures e
        WHERE e.archive_id = a.id AND e.status = 'intended' AND e.scope <> 'retention') AS erasing
FROM archives a
WHERE a.id IN :ids;

-- name: duplicates_by_id
-- The archive a duplicate delivery kept in processed/ (duplicate-ID) repeats.
SELECT id, archive_id FROM deliveries WHERE id IN :ids AND archive_id IS NOT NULL;

-- name: record_intent
INSERT INTO erasures (actor, reason, scope, target, file_id, archive_id, sha256, bytes_freed,
                      removed)
VALUES ('retention', :reason, 'retention', :kind, :file_id, :archive_id, :sha256, :bytes_freed,
        :removed)
RETURNING id;

-- name: unfinished
-- Retention's intents not yet done (a crash in between): every run finishes them first.
SELECT e.id, e.target AS kind, e.file_id, e.archive_id, e.removed, f.path
FROM erasures e
LEFT JOIN audio_files f ON f.id = e.file_id
WHERE e.status = 'intended' AND e.scope = 'retention'
ORDER BY e.id;

-- name: mark_audio_erased
UPDATE audio_files SET audio_erased_at = CURRENT_TIMESTAMP, updated_at = CURRENT_TIMESTAMP
WHERE id = :file_id AND audio_erased_at IS NULL;

-- name: still_settled
-- Checked again before an intent's audio or rows go: the recording is still screened and has
-- no open item (a rescreen may have sent it back, a review item may have opened meanwhile).
SELECT count(*) FROM recording_retention
WHERE file_id = :file_id AND status IN ('classified', 'quarantined') AND open_items = 0;

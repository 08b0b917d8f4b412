-- The recordings' lifecycle: erasure on request (earmark.lifecycle.erase). Ids, hashes, counts
-- and times only: never transcript text or names of recordings. Rows of scope 'retention' are
-- retention's (earmark.lifecycle.retention, queries in retention.sql): a retention row with a
-- file_id took that recording's audio or rows of one kind, never the recording, so the queries
-- below that ask "was this erased on request" leave them out.

-- name: erasures
-- The audit: every erasure, oldest first.
SELECT id, at, actor, scope, target, reason, status, file_id, archive_id, sha256, bytes_freed,
       removed, done_at
FROM erasures
ORDER BY id;

-- name: unfinished
-- Erasures whose intent was recorded but not completed (a crash in between): finished first.
-- A recording's row is still there: it goes in the same transaction that marks the intent done.
SELECT e.id, e.file_id, e.archive_id, e.removed, a.run_date, f.path
FROM erasures e
JOIN archives a ON a.id = e.archive_id
LEFT JOIN audio_files f ON f.id = e.file_id
WHERE e.status = 'intended' AND e.scope <> 'retention'
ORDER BY e.id;

-- name: deliveries_named
-- The archives a delivery name became (a duplicate delivery names the archive it repeats).
SELECT DISTINCT archive_id FROM deliveries WHERE name = :name AND archive_id IS NOT NULL
ORDER BY archive_id;

-- name: archive
SELECT id, sha256, status, run_date FROM archives WHERE id = :archive_id;

-- name: file
SELECT id, archive_id FROM audio_files WHERE id = :file_id;

-- name: files_of_archive
-- The recordings an erasure takes, with what the dry run reports.
SELECT f.id, f.archive_id, f.path, f.sha256, f.status, a.run_date,
       (SELECT count(*) FROM review_queue r WHERE r.file_id = f.id) AS review_items
FROM audio_files f
JOIN archives a ON a.id = f.archive_id
WHERE f.archive_id = :archive_id
ORDER BY f.id;

-- name: holding_units
-- Work units planned for a file not yet screened: erasing it would pull it from under a GPU task.
SELECT b.file_id, u.id AS unit_id, u.run_id, u.seq
FROM work_unit_files b
JOIN work_units u ON u.id = b.unit_id
JOIN audio_files f ON f.id = b.file_id
WHERE f.archive_id = :archive_id AND f.status IN ('ready', 'transcribed')
ORDER BY u.id, b.file_id;

-- name: erased_before
-- Done erasures of an archive (file_id NULL: the archive's own row) or of one recording.
SELECT id, at, file_id FROM erasures
WHERE status = 'done' AND scope <> 'retention' AND (archive_id = :archive_id OR file_id = :file_id)
ORDER BY id DESC;

-- name: archive_with_bytes
-- The archive that already has these bytes, and what was erased of it: intake records a
-- redelivery of erased bytes as a duplicate that says so (earmark.ingest.verdicts.same_bytes).
SELECT a.id, a.status, a.error, e.erasure_id, e.erased_at, e.whole, e.recordings
FROM archives a
LEFT JOIN (SELECT archive_id, max(id) AS erasure_id, max(at) AS erased_at,
                  sum(CASE WHEN file_id IS NULL THEN 1 ELSE 0 END) AS whole,
                  count(file_id) AS recordings
           FROM erasures WHERE status = 'done' AND scope <> 'retention'
           GROUP BY archive_id) e ON e.archive_id = a.id
WHERE a.sha256 = :sha;

-- name: duplicate_deliveries
-- Deliveries of an archive's bytes kept in processed/ as duplicates (each a copy of them).
SELECT id, run_date FROM deliveries WHERE archive_id = :archive_id AND status = 'duplicate'
ORDER BY id;

-- name: record_intent
INSERT INTO erasures (actor, reason, scope, target, file_id, archive_id, sha256, bytes_freed,
                      removed)
VALUES (:actor, :reason, :scope, :target, :file_id, :archive_id, :sha256, :bytes_freed, :removed)
RETURNING id;

-- name: set_aside
-- While the intent stands no GPU unit takes the recording (the GPU stage skips quarantined files).
UPDATE audio_files SET status = 'quarantined', error = :error, updated_at = CURRENT_TIMESTAMP
WHERE id = :file_id AND status <> 'quarantined';

-- name: claim_done
-- Complete an intent, once: a concurrent finisher waits on the row, then finds it done.
UPDATE erasures SET status = 'done', done_at = CURRENT_TIMESTAMP
WHERE id = :id AND status = 'intended';

-- name: record_removed
UPDATE erasures SET removed = :removed WHERE id = :id;

-- name: delete_audio_fetches
DELETE FROM audio_fetches
WHERE file_id = :file_id OR item_id IN (SELECT id FROM review_queue WHERE file_id = :file_id);

-- name: delete_review_events
DELETE FROM review_events WHERE item_id IN (SELECT id FROM review_queue WHERE file_id = :file_id);

-- name: delete_review_items
DELETE FROM review_queue WHERE file_id = :file_id;

-- name: delete_labels
DELETE FROM labels WHERE file_id = :file_id;

-- name: delete_transcripts
DELETE FROM transcripts WHERE file_id = :file_id;

-- name: delete_work_unit_files
DELETE FROM work_unit_files WHERE file_id = :file_id;

-- name: delete_audio_file
DELETE FROM audio_files WHERE id = :file_id;

-- name: erased_whole
-- The archive's own erasure row (file_id NULL, with the archive's sha256) when it was erased
-- whole on request.
SELECT id, sha256 FROM erasures
WHERE archive_id = :archive_id AND file_id IS NULL AND status = 'done' AND scope <> 'retention'
ORDER BY id DESC;

-- name: readmitted
SELECT id, at FROM readmissions WHERE archive_id = :archive_id ORDER BY id DESC;

-- name: release_digest
-- The erased archive lets go of its bytes' digest: their next delivery is a new archive.
UPDATE archives SET sha256 = NULL, updated_at = CURRENT_TIMESTAMP
WHERE id = :archive_id AND sha256 = :sha256;

-- name: record_readmission
INSERT INTO readmissions (actor, reason, archive_id, sha256)
VALUES (:actor, :reason, :archive_id, :sha256)
RETURNING id;

-- name: readmissions
-- The audit: every readmission, oldest first.
SELECT id, at, actor, reason, archive_id, sha256 FROM readmissions ORDER BY id;

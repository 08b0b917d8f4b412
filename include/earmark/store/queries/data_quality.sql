-- Data-quality checks run by the `data_quality` task (common-sql SQLCheckOperator: every
-- query must return a single row whose values are all truthy). Each takes the run date as
-- {{ run_date }}, rendered by the DAG. Portable between Postgres and SQLite.

-- name: every_live_file_transcribed
-- A file marked transcribed or classified has a transcript (unless retention removed it).
SELECT count(*) = 0
FROM audio_files f
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = '{{ run_date }}'
  AND f.status IN ('transcribed', 'classified')
  AND NOT EXISTS (SELECT 1 FROM transcripts t WHERE t.file_id = f.id)
  AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.file_id = f.id AND e.scope = 'retention'
                  AND e.target = 'transcripts' AND e.status = 'done');

-- name: every_flag_in_review_queue
-- Every current flagged label has its review item of the same version (a flag's, not a second
-- review or a sample), unless retention removed the recording's decided reviews.
SELECT count(*) = 0
FROM labels l
JOIN audio_files f ON f.id = l.file_id
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = '{{ run_date }}'
  AND l.label = 1 AND l.superseded_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM review_queue r
                  WHERE r.file_id = l.file_id AND r.policy = l.policy AND r.kind = 'flag'
                    AND r.policy_sha = l.policy_sha AND r.model = l.model)
  AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.file_id = l.file_id AND e.scope = 'retention'
                  AND e.target = 'reviews' AND e.status = 'done');

-- name: quarantine_has_reason
-- Nothing is rejected or quarantined without a reason.
SELECT count(*) = 0
FROM (
    SELECT id FROM archives WHERE run_date = '{{ run_date }}' AND status = 'rejected' AND error IS NULL
    UNION ALL
    SELECT id FROM deliveries WHERE run_date = '{{ run_date }}' AND status <> 'registered'
      AND reason IS NULL
    UNION ALL
    SELECT f.id FROM audio_files f JOIN archives a ON a.id = f.archive_id
    WHERE a.run_date = '{{ run_date }}' AND f.status = 'quarantined' AND f.error IS NULL
) AS unexplained;

-- name: unpacked_archives_have_files_registered
-- (A recording erased on request counts: its row is gone, its erasure says so. Retention keeps
-- the row, so its erasures do not count.)
SELECT count(*) = 0
FROM archives a
WHERE a.run_date = '{{ run_date }}' AND a.status = 'unpacked'
  AND a.n_files <> (SELECT count(*) FROM audio_files f WHERE f.archive_id = a.id)
    + (SELECT count(*) FROM erasures e WHERE e.archive_id = a.id AND e.file_id IS NOT NULL
       AND e.status = 'done' AND e.scope <> 'retention');

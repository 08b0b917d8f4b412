-- What the day's HTML report plots and lists. Every query takes :d, the run date (YYYY-MM-DD).
-- Counts, times, ids and names only: never transcript text.

-- name: progress
-- Each screened (classified) file's audio seconds and when it was done: progress through the day.
SELECT f.updated_at AS done_at, coalesce(f.duration_s, 0) AS audio_s
FROM audio_files f
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d AND f.status = 'classified'
ORDER BY f.updated_at, f.id;

-- name: batches
-- Every GPU work unit of the day, in the order they were planned: audio, measured and expected
-- GPU seconds, and the hosts that ran each stage.
SELECT b.run_id, b.seq, b.n_files, b.audio_s, b.expected_gpu_s,
       b.transcribe_wall_s, b.classify_wall_s, b.transcribe_host, b.classify_host, b.created_at
FROM work_units b
WHERE b.run_date = :d
ORDER BY b.created_at, b.run_id, b.seq;

-- name: no_speech
-- Files with nothing to screen: intake found them silent (peak level), or they were decoded and
-- voice activity detection found no speech in them (their transcript is empty by finding).
SELECT coalesce(sum(f.no_speech), 0) AS no_speech, coalesce(sum(f.silent), 0) AS silent
FROM audio_files f
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d AND f.status <> 'quarantined';

-- name: flags_by_policy
-- Per policy and version (policy sha256, model): files scored and files flagged, and whether
-- the version is still current (a rescreen supersedes a version's labels, never mixes them).
SELECT l.policy, l.policy_sha, l.model, count(*) AS scored, coalesce(sum(l.label), 0) AS flagged,
       sum(CASE WHEN l.superseded_at IS NULL THEN 1 ELSE 0 END) AS current
FROM labels l
JOIN audio_files f ON f.id = l.file_id
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d
GROUP BY l.policy, l.policy_sha, l.model
ORDER BY l.policy, l.policy_sha, l.model;

-- name: archive_completeness
-- Per archive of the day: its files by outcome; incomplete archives first.
SELECT a.id, a.name, a.status,
       count(f.id) AS files,
       coalesce(sum(CASE WHEN f.status = 'classified' THEN 1 ELSE 0 END), 0) AS screened,
       coalesce(sum(CASE WHEN f.status = 'quarantined' THEN 1 ELSE 0 END), 0) AS quarantined,
       coalesce(sum(CASE WHEN f.status IN ('ready', 'transcribed') THEN 1 ELSE 0 END), 0)
           AS pending
FROM archives a
LEFT JOIN audio_files f ON f.archive_id = a.id
WHERE a.run_date = :d
GROUP BY a.id, a.name, a.status
ORDER BY
    CASE WHEN a.status = 'registered'
          OR sum(CASE WHEN f.status IN ('ready', 'transcribed') THEN 1 ELSE 0 END) > 0
         THEN 0 ELSE 1 END,
    a.name, a.id;

-- name: save_report
-- The day's report; a later report of the same day replaces it.
INSERT INTO day_reports (run_date, run_id, html, generated_at)
VALUES (:d, :run_id, :html, CURRENT_TIMESTAMP)
ON CONFLICT (run_date) DO UPDATE
SET run_id = excluded.run_id, html = excluded.html, generated_at = excluded.generated_at;

-- name: load_report
SELECT html, run_id, generated_at FROM day_reports WHERE run_date = :d;

-- Where one day stands. Every query takes :d, the run date (YYYY-MM-DD), and :now (UTC).
-- Used by the noon check, the report task and `earmark status`.

-- name: deliveries_by_status
-- Everything intake took out of incoming/ for the day: registered, duplicate or rejected.
SELECT status, count(*) AS n
FROM deliveries
WHERE run_date = :d
GROUP BY status;

-- name: archives_by_status
SELECT status, count(*) AS n
FROM archives
WHERE run_date = :d
GROUP BY status;

-- name: files_by_status
SELECT f.status, count(*) AS n
FROM audio_files f
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d
GROUP BY f.status;

-- name: audio_seconds
SELECT
    sum(f.duration_s) AS total_s,
    sum(CASE WHEN f.status IN ('ready', 'transcribed') THEN f.duration_s ELSE 0 END) AS pending_s
FROM audio_files f
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d AND f.status <> 'quarantined';

-- name: labels
-- The day's current labels (a superseded one was replaced by a rescreen's).
SELECT count(*) AS n, sum(l.label) AS flagged
FROM labels l
JOIN audio_files f ON f.id = l.file_id
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d AND l.superseded_at IS NULL;

-- name: gpu_throughput
-- Audio seconds per wall second over the day's finished batches (both GPU stages).
SELECT
    sum(audio_s) AS audio_s,
    sum(coalesce(transcribe_wall_s, 0) + coalesce(classify_wall_s, 0)) AS wall_s
FROM work_units
WHERE run_date = :d AND transcribe_wall_s IS NOT NULL AND classify_wall_s IS NOT NULL;

-- name: quarantine
-- Rejected deliveries (marker, name, file type, transport), rejected archives (content) and
-- quarantined files, each with its reason.
SELECT 'delivery' AS kind, d.name AS item, d.reason AS reason
FROM deliveries d
WHERE d.run_date = :d AND d.status = 'rejected'
UNION ALL
SELECT 'archive' AS kind, a.name AS item, a.error AS reason
FROM archives a
WHERE a.run_date = :d AND a.status = 'rejected'
UNION ALL
SELECT 'file' AS kind, a.name || ':' || f.member_path AS item, f.error AS reason
FROM audio_files f
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d AND f.status = 'quarantined'
ORDER BY kind, item;

-- name: review_items
-- The day's flags in the review queue, highest score first (ids and names only, never
-- transcript text). For operators at the command line (`earmark status`), never on a page a
-- reviewer can open: any flag may later be reviewed blind. Second reviews and below-threshold
-- samples are left out.
SELECT r.id,
       CASE WHEN r.status = 'claimed' AND r.claimed_until < :now THEN 'pending'
            ELSE r.status END AS status,
       r.policy, r.score, a.name AS archive, f.member_path
FROM review_queue r
JOIN audio_files f ON f.id = r.file_id
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d AND r.kind = 'flag' AND r.status <> 'withdrawn'
ORDER BY r.score DESC, r.id;

-- name: review_item_counts
-- The day's review items per policy, version (policy sha256, model), kind and status ('withdrawn':
-- left the queue undecided when a rescreen superseded its version). Counts only: any flag may
-- later be reviewed blind (a second review), and a score or recording name listed here would
-- tell that reviewer what the item page hides.
SELECT r.policy, r.policy_sha, r.model, r.kind,
       CASE WHEN r.status = 'claimed' AND r.claimed_until < :now THEN 'pending'
            ELSE r.status END AS status,
       count(*) AS n
FROM review_queue r
JOIN audio_files f ON f.id = r.file_id
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date = :d
GROUP BY r.policy, r.policy_sha, r.model, r.kind, 5
ORDER BY r.policy, r.policy_sha, r.model, r.kind, 5;

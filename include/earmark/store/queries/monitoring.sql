-- Across days: what an operator's monitoring watches. Used by `earmark metrics` and
-- `earmark health`. Queries over a recent window take :since (Store.timestamp of a UTC time).

-- name: review_backlog
-- Review items waiting for an RA (pending, lapsed claims included) or held by one under a live
-- lease (claimed), and the oldest open item, as of now (UTC).
SELECT CASE WHEN status = 'claimed' AND claimed_until < :now THEN 'pending' ELSE status END
           AS status,
       count(*) AS n, min(created_at) AS oldest
FROM review_queue
WHERE status IN ('pending', 'claimed')
GROUP BY 1;

-- name: files_in_flight
-- Files of every day still to be transcribed or classified, with their audio seconds.
SELECT f.status, count(*) AS n, coalesce(sum(f.duration_s), 0) AS audio_s
FROM audio_files f
WHERE f.status IN ('ready', 'transcribed')
GROUP BY f.status;

-- name: archives_waiting_to_unpack
-- Registered archives of any day whose unpack has not run yet, and the oldest registration.
SELECT count(*) AS n, min(registered_at) AS oldest
FROM archives
WHERE status = 'registered';

-- name: unfinished_units
-- GPU work units with files still to screen, per run: `earmark health` names those whose run is
-- over (failed or marked done) as left behind, to be screened by a rerun of the day.
SELECT b.run_id, b.run_date, count(DISTINCT b.id) AS units, count(*) AS files,
       min(b.created_at) AS oldest
FROM work_units b
JOIN work_unit_files bf ON bf.unit_id = b.id
JOIN audio_files f ON f.id = bf.file_id
WHERE f.status IN ('ready', 'transcribed')
GROUP BY b.run_id, b.run_date
ORDER BY min(b.created_at);

-- name: screened_since
-- Files screened (classified) since a given time, and their audio seconds: throughput over the hour.
SELECT count(*) AS files, coalesce(sum(f.duration_s), 0) AS audio_s
FROM audio_files f
WHERE f.status = 'classified' AND f.updated_at >= :since;

-- name: quarantined_since
-- Deliveries and archives rejected and files quarantined since a given time, with their reasons: the
-- quarantine rate by reason (reason codes are taken from the reasons in code).
SELECT 'delivery' AS kind, d.reason AS reason
FROM deliveries d
WHERE d.status = 'rejected' AND d.received_at >= :since
UNION ALL
SELECT 'archive' AS kind, a.error AS reason
FROM archives a
WHERE a.status = 'rejected' AND a.updated_at >= :since
UNION ALL
SELECT 'file' AS kind, f.error AS reason
FROM audio_files f
WHERE f.status = 'quarantined' AND f.updated_at >= :since;

-- name: task_failures_since
-- Task failures recorded since a given time, per task: the error rate.
SELECT task_id, count(*) AS n
FROM task_failures
WHERE failed_at >= :since
GROUP BY task_id
ORDER BY task_id;

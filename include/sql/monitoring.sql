-- Across days: what an operator's monitoring watches. Used by `earmark metrics`.
-- Every query takes :now, the current time (UTC), where it needs one.

-- name: review_backlog
-- Review items waiting for an RA (pending) or held by one (claimed), and the oldest open item.
SELECT status, count(*) AS n, min(created_at) AS oldest
FROM review_queue
WHERE status IN ('pending', 'claimed')
GROUP BY status;

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

-- Why a run's tasks failed: written by each failing task, read by the failure mail and the
-- day's report. Reason lines are one line of an exception's message, never transcript text.

-- name: save_failure
-- One failed try of a task instance; the same try recorded twice is kept once.
INSERT INTO task_failures (run_id, run_date, task_id, map_index, map_name, try_number, reason)
VALUES (:run_id, :run_date, :task_id, :map_index, :map_name, :try_number, :reason)
ON CONFLICT (run_id, task_id, map_index, try_number) DO NOTHING;

-- name: run_failures
-- The last recorded try of each failed task instance of a run, oldest failure first.
SELECT f.task_id, f.map_index, f.map_name, f.reason, f.run_date, f.failed_at
FROM task_failures f
WHERE f.run_id = :run_id
  AND f.try_number = (
      SELECT max(g.try_number) FROM task_failures g
      WHERE g.run_id = f.run_id AND g.task_id = f.task_id AND g.map_index = f.map_index
  )
ORDER BY f.failed_at, f.id;

-- name: day_failures
-- Every failed task of the day's runs (any run), newest first: the day's report lists them.
SELECT f.run_id, f.task_id, f.map_index, f.map_name, f.try_number, f.reason, f.failed_at
FROM task_failures f
WHERE f.run_date = :d
ORDER BY f.failed_at DESC, f.id DESC;

-- name: day_progress
-- When the day's screening last moved: an archive or file changed status (registered, unpacked,
-- transcribed, classified, quarantined), a transcript or a label was written; and when the run
-- planned its GPU work units (its GPU tasks wait for a worker from then on). The deadline mail
-- calls a run stalled when nothing has moved for EARMARK_STALL_MINUTES.
SELECT
    (SELECT max(a.updated_at) FROM archives a WHERE a.run_date = :d) AS archive_changed,
    (SELECT max(f.updated_at)
     FROM audio_files f JOIN archives a ON a.id = f.archive_id
     WHERE a.run_date = :d) AS file_changed,
    (SELECT max(t.created_at)
     FROM transcripts t JOIN audio_files f ON f.id = t.file_id
     JOIN archives a ON a.id = f.archive_id
     WHERE a.run_date = :d) AS transcribed,
    (SELECT max(l.created_at)
     FROM labels l JOIN audio_files f ON f.id = l.file_id
     JOIN archives a ON a.id = f.archive_id
     WHERE a.run_date = :d) AS labelled,
    (SELECT max(b.created_at) FROM work_units b WHERE b.run_id = :run_id) AS units_planned;

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

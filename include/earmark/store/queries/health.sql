-- What `earmark health` reads from Airflow's metadata DB (the results DB's queries are in
-- monitoring.sql). Airflow's own tables: task_instance, dag_run, slot_pool.

-- name: gpu_pool_slots
-- The slots of the `gpu` pool: how many GPU tasks the scheduler runs at once, so how many GPU
-- slots (workers x concurrency) should be live to serve them.
SELECT slots
FROM slot_pool
WHERE pool = 'gpu';

-- name: long_running_tasks
-- Task instances running since before the cutoff (stuck, or far slower than planned), oldest
-- first.
SELECT dag_id, task_id, map_index, run_id, start_date
FROM task_instance
WHERE state = 'running' AND start_date < :cutoff
ORDER BY start_date;

-- name: active_runs
-- Which of the given runs are still queued or running.
SELECT run_id
FROM dag_run
WHERE state IN ('queued', 'running') AND run_id IN :ids;

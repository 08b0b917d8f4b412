-- Operators' answers, kept with the day:
--   task_failures  why a task of a run failed, written by the failing task itself (its
--                  on_failure_callback): the failure mail, the day page and the report name the
--                  task, its map name and the reason line (one line, never transcript text)
--   day_reports    the day's HTML report with its plots, written by the report task; the day
--                  page and the mails link to it

CREATE TABLE task_failures (
    id         {{pk}},
    run_id     TEXT NOT NULL,
    run_date   {{date}},
    task_id    TEXT NOT NULL,
    map_index  INTEGER NOT NULL DEFAULT -1,
    map_name   TEXT,
    try_number INTEGER NOT NULL DEFAULT 1,
    reason     TEXT NOT NULL,
    failed_at  {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (run_id, task_id, map_index, try_number)
);
CREATE INDEX task_failures_run_date ON task_failures (run_date);

CREATE TABLE day_reports (
    run_date     {{date}} PRIMARY KEY,
    run_id       TEXT NOT NULL,
    html         TEXT NOT NULL,
    generated_at {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP
);

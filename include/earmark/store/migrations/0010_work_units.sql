-- The schema speaks the code's words: a GPU work unit (planned by earmark.gpu.work_units) was
-- stored as a "gpu batch", which the code also uses for a model's batch of rows.
--   gpu_batches            -> work_units       (one row per planned unit, with its figures)
--   batch_files            -> work_unit_files  (the files of each unit)
--   batch_files.batch_id   -> work_unit_files.unit_id
-- RENAME keeps every row, key and foreign key (SQLite 3.25+ rewrites the references too).
ALTER TABLE gpu_batches RENAME TO work_units;
ALTER TABLE batch_files RENAME TO work_unit_files;
ALTER TABLE work_unit_files RENAME COLUMN batch_id TO unit_id;

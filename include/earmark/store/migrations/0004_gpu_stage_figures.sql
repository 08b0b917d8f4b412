-- What each GPU work unit cost, so the next day's units are sized from measured GPU time and
-- operators can see where a unit's time went:
--   expected_gpu_s      the planner's estimate when the unit was made
--   *_load_s            seconds spent loading the stage's model (0 when nothing was loaded)
--   asr_forwards/rows   Whisper generate calls and the segments they decoded (occupancy =
--                       rows / (forwards x asr_batch_size))
--   asr_fed_s/padded_s  audio seconds fed to Whisper and the silence added to fill 30 s windows
--   *_host              the worker that ran the stage (hostname and GPU)

ALTER TABLE gpu_batches ADD COLUMN expected_gpu_s REAL;
ALTER TABLE gpu_batches ADD COLUMN transcribe_load_s REAL;
ALTER TABLE gpu_batches ADD COLUMN classify_load_s REAL;
ALTER TABLE gpu_batches ADD COLUMN asr_batch_size INTEGER;
ALTER TABLE gpu_batches ADD COLUMN asr_forwards INTEGER;
ALTER TABLE gpu_batches ADD COLUMN asr_rows INTEGER;
ALTER TABLE gpu_batches ADD COLUMN asr_fed_s REAL;
ALTER TABLE gpu_batches ADD COLUMN asr_padded_s REAL;
ALTER TABLE gpu_batches ADD COLUMN transcribe_host TEXT;
ALTER TABLE gpu_batches ADD COLUMN classify_host TEXT;

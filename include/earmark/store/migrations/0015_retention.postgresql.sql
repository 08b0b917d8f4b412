-- Retention per kind of data (earmark.lifecycle.retention), recorded in `erasures` as erasure on
-- request is (intent first, then the disk, then the rows):
--   erasures.scope             adds 'retention': a rule of the lifecycle took it; target is the
--                              rule ('delivered_archives', 'unflagged_audio', 'flagged_audio',
--                              'transcripts', 'labels', 'reviews'), actor 'retention', reason the
--                              rule, its days and its setting. Unlike an erasure on request the
--                              recording's audio_files row stays (file_id set: the recording whose
--                              audio or rows of that kind went; NULL for delivered archives).
--   audio_files.audio_erased_at when retention removed the recording's audio file (NULL: held);
--                              the row and what remains of it stay, the audio is never fetched or
--                              planned again.
ALTER TABLE erasures DROP CONSTRAINT erasures_scope_check;
ALTER TABLE erasures ADD CONSTRAINT erasures_scope_check
    CHECK (scope IN ('file', 'archive', 'delivery', 'retention'));
CREATE INDEX erasures_scope ON erasures (scope, status);

ALTER TABLE audio_files ADD COLUMN audio_erased_at {{ts}};
CREATE INDEX audio_files_audio_held ON audio_files (archive_id) WHERE audio_erased_at IS NULL;

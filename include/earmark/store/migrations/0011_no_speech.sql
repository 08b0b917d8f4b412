-- A file in which voice activity detection found no speech is recorded as such: its empty
-- transcript means "nothing was said", not a clean transcript of speech. Set by the
-- transcription stage for every file it decodes (0 when speech was found); intake's `silent`
-- (peak level) is a different finding, made before any decoding.
ALTER TABLE audio_files ADD COLUMN no_speech INTEGER NOT NULL DEFAULT 0 CHECK (no_speech IN (0, 1));

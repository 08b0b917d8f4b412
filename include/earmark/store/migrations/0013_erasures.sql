-- Erasure on request (`earmark erase`), append-only: one row per recording erased and one per
-- archive whose delivered bytes were erased (file_id NULL). Hashes and counts, never content or
-- names of recordings. A row is written 'intended' before anything is removed, in a transaction
-- of its own; the disk files go next; then one transaction deletes the recording's rows and marks
-- it 'done' (done_at, removed). A crash in between leaves an 'intended' row that the next
-- `earmark erase` finishes first. Nothing else updates or deletes a row here.
--   actor        who ran it (`--by`, default the OS user); reason: why (required)
--   scope        what was asked for: 'file' | 'archive' | 'delivery'; target: the id or name given
--   file_id      the audio_files id erased (its row is gone, so no foreign key), NULL on the
--                archive's own row; archive_id: the archive (its row stays, sha256 and all, so a
--                redelivery of the bytes is a duplicate that says they were erased)
--   sha256       of the erased recording or archive
--   bytes_freed  bytes of the disk files to remove, measured when the intent was recorded
--   removed      JSON: disk files and rows removed per kind (disk counts at intent, rows at done)

CREATE TABLE erasures (
    id          {{pk}},
    at          {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL CHECK (reason <> ''),
    scope       TEXT NOT NULL CHECK (scope IN ('file', 'archive', 'delivery')),
    target      TEXT NOT NULL,
    file_id     BIGINT,
    archive_id  BIGINT NOT NULL,
    sha256      TEXT,
    bytes_freed BIGINT NOT NULL DEFAULT 0,
    removed     TEXT,
    status      TEXT NOT NULL DEFAULT 'intended' CHECK (status IN ('intended', 'done')),
    done_at     {{ts}}
);
CREATE INDEX erasures_archive ON erasures (archive_id, status);
CREATE INDEX erasures_file ON erasures (file_id);
CREATE INDEX erasures_status ON erasures (status);

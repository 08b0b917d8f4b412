-- Retention per kind of data (see the PostgreSQL file for what each change means). SQLite
-- cannot change a CHECK constraint in place, so `erasures` is rebuilt in SQLite's documented
-- order (new table, copy, drop, rename), ids kept.

CREATE TABLE erasures_rebuilt (
    id          {{pk}},
    at          {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL CHECK (reason <> ''),
    scope       TEXT NOT NULL CONSTRAINT erasures_scope_check
                CHECK (scope IN ('file', 'archive', 'delivery', 'retention')),
    target      TEXT NOT NULL,
    file_id     BIGINT,
    archive_id  BIGINT NOT NULL,
    sha256      TEXT,
    bytes_freed BIGINT NOT NULL DEFAULT 0,
    removed     TEXT,
    status      TEXT NOT NULL DEFAULT 'intended' CHECK (status IN ('intended', 'done')),
    done_at     {{ts}}
);
INSERT INTO erasures_rebuilt
    (id, at, actor, reason, scope, target, file_id, archive_id, sha256, bytes_freed, removed,
     status, done_at)
SELECT id, at, actor, reason, scope, target, file_id, archive_id, sha256, bytes_freed, removed,
       status, done_at
FROM erasures;
DROP TABLE erasures;
ALTER TABLE erasures_rebuilt RENAME TO erasures;
CREATE INDEX erasures_archive ON erasures (archive_id, status);
CREATE INDEX erasures_file ON erasures (file_id);
CREATE INDEX erasures_status ON erasures (status);
CREATE INDEX erasures_scope ON erasures (scope, status);

ALTER TABLE audio_files ADD COLUMN audio_erased_at {{ts}};
CREATE INDEX audio_files_audio_held ON audio_files (archive_id) WHERE audio_erased_at IS NULL;

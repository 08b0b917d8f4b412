-- Each archive is read once: its sha256 is computed while it is extracted, not in a separate pass
-- at registration. So an archive row exists before its digest is known:
--   archives.sha256             NULL until the unpack has read the bytes; then unique as before
--   deliveries.declared_sha256  the digest the delivery's marker gave (the bytes' digest is
--                               deliveries.sha256, set once they were read)
-- SQLite cannot drop NOT NULL, so `archives` is rebuilt in SQLite's documented order (new table,
-- copy, drop, rename); the runner turns foreign keys off around SQLite migrations and checks them
-- all before committing. Ids are kept, so every key still points at its row.

CREATE TABLE archives_rebuilt (
    id            {{pk}},
    name          TEXT NOT NULL,
    sha256        TEXT UNIQUE,
    run_date      {{date}} NOT NULL,
    status        TEXT NOT NULL DEFAULT 'registered'
                  CHECK (status IN ('registered', 'unpacked', 'rejected')),
    path          TEXT NOT NULL,
    n_files       INTEGER,
    bytes         BIGINT,
    error         TEXT,
    registered_at {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO archives_rebuilt
    (id, name, sha256, run_date, status, path, n_files, bytes, error, registered_at, updated_at)
SELECT id, name, sha256, run_date, status, path, n_files, bytes, error, registered_at, updated_at
FROM archives;
DROP TABLE archives;
ALTER TABLE archives_rebuilt RENAME TO archives;
CREATE INDEX archives_run_date ON archives (run_date, status);

ALTER TABLE deliveries ADD COLUMN declared_sha256 TEXT;

-- Readmissions (`earmark erase --readmit ARCHIVE`), append-only: an operator lets the bytes of
-- an archive erased whole be delivered and screened again (a participant who withdrew and came
-- back). The erased archive's row lets go of its sha256 in the same transaction (it is kept
-- here and in its erasure rows), so the next delivery of those bytes is a new archive; until
-- then a redelivery is a duplicate whose reason says the bytes were erased.
CREATE TABLE readmissions (
    id         {{pk}},
    at         {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL CHECK (reason <> ''),
    archive_id BIGINT NOT NULL REFERENCES archives (id),
    sha256     TEXT NOT NULL
);
CREATE INDEX readmissions_archive ON readmissions (archive_id);
CREATE INDEX readmissions_sha256 ON readmissions (sha256);

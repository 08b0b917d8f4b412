-- Deliveries: one row per thing intake took out of incoming/ (an archive with its marker, a
-- marker alone, or an entry that is not a regular file), each with exactly one verdict:
--   registered  the bytes became archive `archive_id` (its own status says what happened next)
--   duplicate   the same bytes were already an archive (`archive_id`; reason says its status)
--   rejected    refused before registration (marker, transport, name or file type); the bytes
--               are NOT remembered as bad, so a correct delivery of them later is screened
-- `token` names the folder the delivery was claimed into (claimed/<token>/); `path` is where its
-- files lie now. `archives` keeps only registered bytes: rejected there means the content.

CREATE TABLE deliveries (
    id          {{pk}},
    token       TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    run_date    {{date}} NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('registered', 'duplicate', 'rejected')),
    sha256      TEXT,
    archive_id  BIGINT REFERENCES archives (id),
    reason      TEXT,
    path        TEXT NOT NULL,
    received_at {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CHECK ((status = 'rejected') = (archive_id IS NULL)),
    CHECK (status <> 'rejected' OR reason IS NOT NULL)
);
CREATE INDEX deliveries_run_date ON deliveries (run_date, status);

-- Before this version, a delivery refused for its marker or its name was recorded in `archives`
-- under the sha256 of its bytes, which barred a later, correct delivery of the same bytes. Such
-- rows (never extracted: no files refer to them) become rejected deliveries.
INSERT INTO deliveries (token, name, run_date, status, sha256, reason, path, received_at)
SELECT 'legacy-' || id, name, run_date, 'rejected', sha256, error, path, registered_at
FROM archives
WHERE status = 'rejected'
  AND (error LIKE 'bad_marker:%' OR error LIKE 'checksum_mismatch:%'
       OR error LIKE 'not_a_tar: %: expected one of %')
  AND NOT EXISTS (SELECT 1 FROM audio_files f WHERE f.archive_id = archives.id);

DELETE FROM archives
WHERE status = 'rejected'
  AND (error LIKE 'bad_marker:%' OR error LIKE 'checksum_mismatch:%'
       OR error LIKE 'not_a_tar: %: expected one of %')
  AND NOT EXISTS (SELECT 1 FROM audio_files f WHERE f.archive_id = archives.id);

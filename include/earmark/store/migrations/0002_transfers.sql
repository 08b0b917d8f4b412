-- The transfer ledger: one row per source archive that earmark_transfer has seen settled.
-- status: pending (to copy) -> copied (in incoming/ with its marker) or failed (reason in error).
-- source_mtime is the source's modification time in epoch seconds (exact, for change detection);
-- sha256 is the digest of the bytes written to incoming/, recorded before the rename.

CREATE TABLE transfers (
    id            {{pk}},
    source_uri    TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    bytes         BIGINT NOT NULL,
    source_mtime  DOUBLE PRECISION NOT NULL,
    sha256        TEXT,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'copied', 'failed')),
    error         TEXT,
    discovered_at {{ts}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    copied_at     {{ts}}
);
CREATE INDEX transfers_status ON transfers (status);

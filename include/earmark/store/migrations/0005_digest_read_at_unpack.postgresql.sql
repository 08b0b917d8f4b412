-- Each archive is read once: its sha256 is computed while it is extracted, not in a separate pass
-- at registration. So an archive row exists before its digest is known:
--   archives.sha256             NULL until the unpack has read the bytes; then unique as before
--   deliveries.declared_sha256  the digest the delivery's marker gave (the bytes' digest is
--                               deliveries.sha256, set once they were read)
-- Same SQL in 0005_digest_read_at_unpack.sqlite.sql, where dropping NOT NULL takes a rebuild.

ALTER TABLE archives ALTER COLUMN sha256 DROP NOT NULL;
ALTER TABLE deliveries ADD COLUMN declared_sha256 TEXT;

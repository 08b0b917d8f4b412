-- What retention reads of each recording, written once (earmark.lifecycle.retention): its
-- audio (path, bytes, when it went), its run date and status, whether it was ever flagged (a
-- label 1, superseded or not, or a review item of any kind), how many of its review items are
-- open ('pending', 'claimed'), its last review decision, and whether an erasure is under way for
-- it (an 'intended' row). Each rule's query reads this view with its own cutoff.
-- A later migration that rebuilds one of the tables it reads on SQLite (new table, copy, drop,
-- rename) drops this view first and creates it again after: SQLite refuses the rename otherwise.
CREATE VIEW recording_retention AS
SELECT f.id AS file_id, f.archive_id, f.path, f.sha256, coalesce(f.bytes, 0) AS bytes, f.status,
       f.audio_erased_at, a.run_date,
       CASE WHEN EXISTS (SELECT 1 FROM labels l WHERE l.file_id = f.id AND l.label = 1)
                 OR EXISTS (SELECT 1 FROM review_queue r WHERE r.file_id = f.id)
            THEN 1 ELSE 0 END AS flagged,
       (SELECT count(*) FROM review_queue r
        WHERE r.file_id = f.id AND r.status IN ('pending', 'claimed')) AS open_items,
       (SELECT max(r.resolved_at) FROM review_queue r WHERE r.file_id = f.id) AS last_decision,
       CASE WHEN EXISTS (SELECT 1 FROM erasures e WHERE e.file_id = f.id AND e.status = 'intended')
            THEN 1 ELSE 0 END AS erasing
FROM audio_files f
JOIN archives a ON a.id = f.archive_id;

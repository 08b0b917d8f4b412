-- `earmark evaluate`: the review items whose RA decisions a candidate model or policy is judged
-- on. Days are run dates (the day of the recordings) from :first to :last, YYYY-MM-DD. The
-- transcript is the current ASR model's (:asr_model); it is read to be scored, never printed or
-- logged. Read only: evaluate writes nothing.

-- name: decided_items
-- Every resolved flag and below-threshold sample of the days with its decision ('unclear' too:
-- counted apart). Blind second reviews (qa items) are left out: each checks a flag that is here.
-- Per row, what may set the item aside: `decided_later`, 1 when the recording was decided again
-- under the same policy later (another version's item: the latest decision is the one used);
-- `being_erased`, 1 while an erasure on request of the recording is under way; `transcripts`,
-- the file's transcripts by any ASR model; `transcripts_retired`, 1 when retention removed them.
SELECT r.id AS item_id, r.file_id, r.policy, r.kind, r.decision, a.run_date,
       t.text AS transcript,
       CASE WHEN EXISTS (SELECT 1 FROM review_queue later
                         WHERE later.file_id = r.file_id AND later.policy = r.policy
                           AND later.kind IN ('flag', 'sample') AND later.status = 'resolved'
                           AND (later.resolved_at > r.resolved_at
                                OR (later.resolved_at = r.resolved_at AND later.id > r.id)))
            THEN 1 ELSE 0 END AS decided_later,
       CASE WHEN EXISTS (SELECT 1 FROM erasures e
                         WHERE e.file_id = r.file_id AND e.status = 'intended'
                           AND e.scope <> 'retention')
            THEN 1 ELSE 0 END AS being_erased,
       (SELECT count(*) FROM transcripts o WHERE o.file_id = r.file_id) AS transcripts,
       CASE WHEN EXISTS (SELECT 1 FROM erasures e
                         WHERE e.file_id = r.file_id AND e.scope = 'retention'
                           AND e.target = 'transcripts')
            THEN 1 ELSE 0 END AS transcripts_retired
FROM review_queue r
JOIN audio_files f ON f.id = r.file_id
JOIN archives a ON a.id = f.archive_id
LEFT JOIN transcripts t ON t.file_id = r.file_id AND t.model = :asr_model
WHERE a.run_date BETWEEN :first AND :last
  AND r.kind IN ('flag', 'sample') AND r.status = 'resolved'
ORDER BY r.policy, a.run_date, r.id;

-- The RA review's figures: what reviewers did, and what their decisions say about the flags.
-- Days are run dates (the day of the recordings) from :first to :last, YYYY-MM-DD; reviewer
-- activity is by when it happened, from :since to :until. Ids, names and counts only: never
-- transcript text, never a note.

-- name: reviewer_events
-- Every review action in the window, with the time its reviewer last claimed the item before
-- it (how long a decision took).
SELECT e.id, e.item_id, e.action, e.reviewer, e.at,
       (SELECT max(c.at) FROM review_events c
        WHERE c.item_id = e.item_id AND c.reviewer = e.reviewer AND c.action = 'claim'
          AND c.id < e.id) AS claimed_at
FROM review_events e
WHERE e.at >= :since AND e.at < :until
ORDER BY e.id;

-- name: decisions
-- The current decision of every decided flag and below-threshold sample, with its score and
-- the version (policy sha256, model) it was queued under.
SELECT a.run_date, r.policy, r.policy_sha, r.model, r.kind, r.score, r.decision
FROM review_queue r
JOIN audio_files f ON f.id = r.file_id
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date BETWEEN :first AND :last
  AND r.kind IN ('flag', 'sample') AND r.status = 'resolved'
ORDER BY a.run_date, r.policy, r.id;

-- name: qa_pairs
-- Each decided second review beside the decision it checked (of the same version).
SELECT a.run_date, q.policy, q.policy_sha, q.model, earlier.decision AS first_decision, q.decision AS second_decision
FROM review_queue q
JOIN review_queue earlier ON earlier.id = q.first_item_id
JOIN audio_files f ON f.id = q.file_id
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date BETWEEN :first AND :last
  AND q.kind = 'qa' AND q.status = 'resolved' AND earlier.status = 'resolved'
ORDER BY a.run_date, q.policy, q.id;

-- name: scored
-- Per day, policy and version (policy sha256, model; superseded labels count under theirs):
-- files scored, flagged (at or above the threshold), below it, and the below-threshold items
-- queued as samples.
SELECT a.run_date, l.policy, l.policy_sha, l.model,
       count(DISTINCT l.file_id) AS scored,
       count(DISTINCT CASE WHEN l.label = 1 THEN l.file_id END) AS flagged,
       count(DISTINCT CASE WHEN l.label = 0 THEN l.file_id END) AS below,
       (SELECT count(*) FROM review_queue s
        JOIN audio_files sf ON sf.id = s.file_id
        JOIN archives sa ON sa.id = sf.archive_id
        WHERE s.kind = 'sample' AND s.policy = l.policy AND s.policy_sha = l.policy_sha
          AND s.model = l.model AND sa.run_date = a.run_date) AS sampled
FROM labels l
JOIN audio_files f ON f.id = l.file_id
JOIN archives a ON a.id = f.archive_id
WHERE a.run_date BETWEEN :first AND :last
GROUP BY a.run_date, l.policy, l.policy_sha, l.model
ORDER BY a.run_date, l.policy, l.policy_sha, l.model;

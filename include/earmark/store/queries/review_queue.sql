-- The review queue's writes that speak of versions (earmark.review.queue, the one writer of
-- review_queue). A version is a policy's sha256 and the classifier model: an item belongs to one.

-- name: enqueue
-- A flag or a sample of one label; a new score of the same version updates an item only while
-- it is pending, or withdrawn (the version is current again: the item is offered again).
INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind)
VALUES (:f, :p, :sha, :m, :s, :k)
ON CONFLICT (file_id, policy, policy_sha, model, kind) DO UPDATE SET
    score = excluded.score, status = 'pending'
WHERE review_queue.status IN ('pending', 'withdrawn');

-- name: withdraw_other_versions
-- The file was scored under this policy again, by another version or model: its flags and
-- samples that no one decided yet leave the queue (a holder's claim ends with them; decided
-- items stay). A second review stays: it checks a decision already made under its version.
UPDATE review_queue SET status = 'withdrawn', claimed_by = NULL, claimed_until = NULL
WHERE file_id = :f AND policy = :p AND status IN ('pending', 'claimed') AND kind <> 'qa'
  AND NOT (policy_sha = :sha AND model = :m);

-- name: queue_second_review
-- A decided flag's blind second review, of the same version.
INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind, first_item_id)
SELECT file_id, policy, policy_sha, model, score, 'qa', id FROM review_queue
WHERE id = :id AND kind = 'flag'
ON CONFLICT (file_id, policy, policy_sha, model, kind) DO NOTHING;

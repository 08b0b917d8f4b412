-- Questions an auditor asks of the results DB. Ids, names and times only: never transcript text.

-- name: listens
-- Who fetched a recording's audio, when, under which claim (the claim's time), newest first.
SELECT l.at, l.reviewer, l.item_id, r.policy, r.kind, l.byte_range, c.at AS claimed_at
FROM audio_fetches l
JOIN review_queue r ON r.id = l.item_id
LEFT JOIN review_events c ON c.id = l.claim_event_id
WHERE l.file_id = :file_id
ORDER BY l.at DESC, l.id DESC;

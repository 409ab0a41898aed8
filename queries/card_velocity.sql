-- Card velocity: cards with 5 or more authorizations in any 60-second window (sliding every 10 s).
-- A classic card-testing signal; declines and distinct merchants help triage the alert.
SELECT
  card_id,
  window_start,
  window_end,
  count(*) AS authorizations,
  count(*) FILTER (WHERE status = 'declined') AS declines,
  count(DISTINCT merchant_id) AS merchants
FROM HOP(payments, event_time, INTERVAL '10' SECOND, INTERVAL '60' SECOND)
WHERE event_type = 'authorization'
GROUP BY card_id, window_start, window_end
HAVING count(*) >= 5;

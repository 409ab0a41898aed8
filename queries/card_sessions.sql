-- Card sessions: activity per card, closed after 30 seconds without an authorization.
-- Grouped by currency as well, so a total never adds amounts of different currencies.
SELECT
  card_id,
  currency,
  window_start,
  window_end,
  count(*) AS authorizations,
  sum(amount_minor) AS total_minor,
  count(DISTINCT merchant_id) AS merchants
FROM SESSION(payments, event_time, INTERVAL '30' SECOND)
WHERE event_type = 'authorization'
GROUP BY card_id, currency, window_start, window_end;

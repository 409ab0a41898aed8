-- Card velocity: cards with 5 or more authorizations in any 60-second window (sliding every
-- 10 s), with their declines and distinct merchants.
--
-- Why: the classic card-testing signal — a card tried again and again within a minute; the
-- declines and the number of merchants help triage the alert.
--
-- How: HOP windows of 60 s every 10 s per card over authorizations; HAVING count(*) >= 5.
--
-- Parameters: none (5 and 60 s are in the SQL: this file is also the engine's golden sample
-- query, run as it is by the tests and `paystream bench`; card_velocity_per_event.sql is the
-- parameterised rule).
--
-- Emits: one row per card and window over the limit, when the window closes; a burst
-- appears in each of the overlapping windows that hold five of its authorizations.
--
-- Late events: an authorization behind the watermark goes to the late output, uncounted.
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

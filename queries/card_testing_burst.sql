-- Card testing: a card tried again and again within seconds, mostly declined — a fraudster
-- checking which stolen card numbers work before using them.
--
-- Why: testing runs many small authorizations against one card, seconds apart, across
-- merchants; most are declined (wrong CVC, expiry). Catching the burst stops the card before
-- the large purchase that follows, and the merchants it touched can tighten their checks.
--
-- How: per card, a session of authorizations that ends after burst_gap without one (SESSION
-- window); a session with at least min_attempts authorizations of which at least min_declines
-- were declined is a burst.
--
-- Parameters: min_attempts (authorizations in one session), min_declines (declined among them).
-- The gap between attempts is the session's INTERVAL (30 seconds).
--
-- Emits: one row per burst when its session closes (the watermark passes its last
-- authorization plus the gap): the card, the session's bounds, attempts, declines, distinct
-- merchants and the smallest and largest amount tried.
--
-- Late events: an authorization behind the watermark goes to the late output, uncounted; a
-- session is never reopened.
SET min_attempts = '6';
SET min_declines = '3';

SELECT card_id, window_start, window_end, attempts, declines, merchants, smallest_minor,
       largest_minor
FROM (
  SELECT card_id, window_start, window_end,
         count(*) AS attempts,
         count(*) FILTER (WHERE status = 'declined') AS declines,
         count(DISTINCT merchant_id) AS merchants,
         min(amount_minor) AS smallest_minor,
         max(amount_minor) AS largest_minor
  FROM SESSION(payments, event_time, INTERVAL '30' SECOND)
  WHERE event_type = 'authorization'
  GROUP BY card_id, window_start, window_end)
WHERE attempts >= ${min_attempts} AND declines >= ${min_declines};

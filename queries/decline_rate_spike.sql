-- Decline-rate spike: a merchant whose share of declined authorizations in a minute is far
-- above its own recent decline rate, scored as a binomial z.
--
-- Why: a wave of declines at one merchant is an enumeration attack (many stolen cards tried,
-- most refused), an issuer outage or a broken integration; a fixed decline-rate threshold
-- either floods small merchants with alerts or misses large ones, a binomial score does not.
--
-- How: authorizations and declines per merchant per minute; the merchant's baseline decline
-- rate p is the EWMA of its earlier minutes' rates (the minute itself excluded); the score is
-- (declines − p·n) / sqrt(p·(1 − p)·n) for the minute's n authorizations — how many standard
-- deviations more declines than the baseline predicts.
--
-- Parameters: alpha (how fast the baseline rate forgets), min_authorizations (minutes with
-- fewer are not scored: a binomial score needs a sample), decline_z (the alert threshold).
--
-- Emits: one row per merchant and minute above decline_z, when the minute closes: the merchant,
-- the minute, authorizations, declines, the baseline rate and the score.
--
-- Late events: an authorization behind the watermark goes to the late output, uncounted.
SET alpha = '0.2';
SET min_authorizations = '20';
SET decline_z = '6';

WITH per_minute AS (
  SELECT merchant_id, window_start, window_end,
         count(*) AS authorizations,
         count(*) FILTER (WHERE status = 'declined') AS declines
  FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)
  WHERE event_type = 'authorization'
  GROUP BY merchant_id, window_start, window_end)
SELECT merchant_id, window_start, window_end, authorizations, declines,
       round(baseline, 4) AS baseline_rate,
       round((declines - baseline * authorizations)
             / sqrt(baseline * (1 - baseline) * authorizations), 2) AS score
FROM (
  SELECT merchant_id, window_start, window_end, authorizations, declines,
         ewma(declines * 1.0 / authorizations, ${alpha})
           OVER (PARTITION BY merchant_id ORDER BY window_start
                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS baseline
  FROM per_minute)
WHERE authorizations >= ${min_authorizations}
  AND baseline > 0 AND baseline < 1
  AND (declines - baseline * authorizations)
      / sqrt(baseline * (1 - baseline) * authorizations) > ${decline_z};

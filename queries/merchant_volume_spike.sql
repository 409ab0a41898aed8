-- Merchant volume spike: a merchant whose authorizations in a minute are far above its own
-- recent baseline.
--
-- Why: a sudden burst at one merchant is how a compromised integration, a bot hitting a
-- checkout or a promotion gone wrong first shows; the team wants it within a minute, scored
-- against the merchant's own normal volume rather than one threshold for all merchants.
--
-- How: authorizations per merchant per minute; each minute is scored with ewma_zscore against
-- the exponentially weighted mean and variance of the merchant's earlier minutes (the minute
-- itself is not in its baseline, so a spike cannot mask itself).
--
-- Parameters: alpha (how fast the baseline forgets, 0.2 ≈ the last 5–10 minutes), warmup
-- (minutes of history before a score), spike_z (the score that raises an alert).
--
-- Emits: one row per merchant and minute whose score exceeds spike_z, when the minute closes
-- (the watermark passes its end): the merchant, the minute, its authorizations and the score.
--
-- Late events: an authorization behind the watermark goes to the late output and is not
-- counted (the minute was already scored). A minute without authorizations has no row and is
-- skipped by the baseline.
SET alpha = '0.2';
SET warmup = '5';
SET spike_z = '6';

WITH per_minute AS (
  SELECT merchant_id, window_start, window_end, count(*) AS authorizations
  FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)
  WHERE event_type = 'authorization'
  GROUP BY merchant_id, window_start, window_end)
SELECT * FROM (
  SELECT merchant_id, window_start, window_end, authorizations,
         round(ewma_zscore(authorizations, ${alpha}, ${warmup})
               OVER (PARTITION BY merchant_id ORDER BY window_start), 2) AS score
  FROM per_minute)
WHERE score > ${spike_z};

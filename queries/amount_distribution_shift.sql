-- Amount distribution shift: a merchant whose typical ticket (the median authorization of a
-- minute) jumps away from its own recent history.
--
-- Why: a merchant's basket sizes are stable; a sudden shift means a changed integration
-- (amounts sent in major instead of minor units), a compromised merchant account pushing
-- large fraudulent sales, or a pricing error. The median ignores the odd large basket that
-- an average would chase.
--
-- How: per merchant, currency and minute, the approximate median amount (approx_median: t-digest,
-- within about 2 % in rank), scored by mad_zscore — 0.6745 · (x − median) / MAD over the
-- merchant's previous `history` minutes in that currency — on the logarithm of the median (of
-- at least 1: a minute of zero-amount card checks has a median of 0), so that a doubling
-- counts the same at any ticket size. NULL (no alert) until `history` minutes are known or
-- when the history does not vary.
--
-- Parameters: history (minutes of baseline), shift_z (robust z above which, in either
-- direction, a minute is flagged).
--
-- Emits: one row per flagged merchant-minute, when the minute closes: the merchant, its
-- currency, authorizations, the median amount (minor units, rounded) and the score.
--
-- Late events: an authorization behind the watermark goes to the late output, uncounted.
SET history = '10';
SET shift_z = '6';

WITH per_minute AS (
  SELECT merchant_id, currency, window_start, window_end, count(*) AS authorizations,
         CAST(round(approx_median(amount_minor)) AS BIGINT) AS median_minor
  FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)
  WHERE event_type = 'authorization'
  GROUP BY merchant_id, currency, window_start, window_end)
SELECT * FROM (
  SELECT merchant_id, currency, window_start, window_end, authorizations, median_minor,
         round(mad_zscore(ln(greatest(median_minor, 1)), ${history})
               OVER (PARTITION BY merchant_id, currency ORDER BY window_start), 2) AS score
  FROM per_minute)
WHERE abs(score) > ${shift_z};

-- Dispute ratio per merchant: chargebacks against captures per merchant and hour, flagged
-- when the ratio passes the threshold the card schemes' monitoring programmes work with.
--
-- Why: a merchant whose chargebacks climb is selling to fraudsters, not delivering, or being
-- attacked; past the schemes' thresholds (Visa and Mastercard monitor about 1-1.5 % of
-- transactions, from 100 disputes a month) come fines and, in the end, losing card
-- acceptance. An hourly view sees the wave start long before the monthly report.
--
-- How: per merchant, currency and 1-hour window, captures and chargebacks (the chargebacks of
-- the hour against the captures of the hour, as the schemes count a month); a window with at
-- least min_chargebacks chargebacks whose ratio is at least max_dispute_bps basis points
-- (1/100 of a percent; integer arithmetic, no rounding) is flagged. For the schemes' own
-- view, make the window a day or a month.
--
-- Parameters: min_chargebacks, max_dispute_bps (150 = 1.5 %).
--
-- Emits: one row per flagged merchant-hour when the hour closes: captures, chargebacks, and
-- the ratio in basis points (rounded down).
--
-- Late events: a capture or chargeback behind the watermark goes to the late output,
-- uncounted.
SET min_chargebacks = '5';
SET max_dispute_bps = '150';

SELECT merchant_id, currency, window_start, window_end, captures, chargebacks,
       chargebacks * 10000 / captures AS dispute_bps
FROM (
  SELECT merchant_id, currency, window_start, window_end,
         count(*) FILTER (WHERE event_type = 'capture') AS captures,
         count(*) FILTER (WHERE event_type = 'chargeback') AS chargebacks
  FROM TUMBLE(payments, event_time, INTERVAL '1' HOUR)
  WHERE event_type IN ('capture', 'chargeback')
  GROUP BY merchant_id, currency, window_start, window_end)
WHERE chargebacks >= ${min_chargebacks} AND captures > 0
  AND chargebacks * 10000 >= ${max_dispute_bps} * captures;

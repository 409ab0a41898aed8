-- Refund after chargeback: a payment refunded by the merchant after the card holder already
-- got the money back through a chargeback — the same money paid out twice.
--
-- Why: a dispute and a refund for one payment are handled by different teams (disputes,
-- customer service) and systems; when both pay out, the merchant loses the amount again plus
-- the dispute fee, and the pattern is also how refund abuse looks. Settlement teams want each
-- one while it can still be clawed back.
--
-- How: an interval join of the stream with itself: a chargeback and a refund of the same
-- payment_id, the refund at or after the chargeback and at most within_days later. State: the
-- chargebacks of the last within_days days (few), and refunds until the watermark passes them.
--
-- Parameters: within_days (how long after a chargeback a refund still counts).
--
-- Emits: one row per chargeback and later refund of the same payment, once both are in and
-- the watermark passed the refund: the payment, merchant, currency, both times and amounts.
--
-- Late events: a chargeback or refund behind the watermark goes to the late output and is not
-- matched (replay the late output with this query to find such pairs).
SET within_days = '30';

SELECT c.payment_id, c.merchant_id, c.currency,
       c.event_time AS charged_back_at, r.event_time AS refunded_at,
       c.amount_minor AS chargeback_minor, r.amount_minor AS refund_minor
FROM payments c
JOIN payments r
  ON r.payment_id = c.payment_id AND r.event_type = 'refund'
 AND r.event_time BETWEEN c.event_time AND c.event_time + INTERVAL '${within_days}' DAY
WHERE c.event_type = 'chargeback';

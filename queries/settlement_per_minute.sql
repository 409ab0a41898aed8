-- Settlement per merchant and currency, per minute of event time.
-- Amounts are integer minor units of `currency`; net = captured - refunded - chargebacks - fees.
SELECT
  merchant_id,
  currency,
  window_start,
  window_end,
  count(*) FILTER (WHERE event_type = 'capture') AS captured_count,
  coalesce(sum(amount_minor) FILTER (WHERE event_type = 'capture'), 0) AS captured_minor,
  coalesce(sum(amount_minor) FILTER (WHERE event_type = 'refund'), 0) AS refunded_minor,
  coalesce(sum(amount_minor) FILTER (WHERE event_type = 'chargeback'), 0) AS chargeback_minor,
  coalesce(sum(fee_minor), 0) AS fees_minor,
  coalesce(sum(amount_minor) FILTER (WHERE event_type = 'capture'), 0)
    - coalesce(sum(amount_minor) FILTER (WHERE event_type = 'refund'), 0)
    - coalesce(sum(amount_minor) FILTER (WHERE event_type = 'chargeback'), 0)
    - coalesce(sum(fee_minor), 0) AS net_minor
FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)
WHERE event_type IN ('capture', 'refund', 'chargeback')
GROUP BY merchant_id, currency, window_start, window_end;

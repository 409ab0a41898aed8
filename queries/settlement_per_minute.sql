-- Settlement per merchant and currency, per minute of event time: the intraday dashboard feed.
--
-- Why: treasury and merchant-support teams watch money move during the day — captured,
-- refunded, charged back, fees and net — per merchant and currency, to the minor unit, long
-- before the daily payout file (settlement_daily.sql) is cut.
--
-- How: a 1-minute TUMBLE per merchant and currency over captures, refunds and chargebacks.
-- Amounts are integer minor units of `currency`; net = captured − refunded − chargebacks −
-- fees. Never summed across currencies.
--
-- Parameters: none (the minute is the INTERVAL; this file is also the engine's golden sample
-- query, run as it is by the tests and `paystream bench`).
--
-- Emits: one row per merchant, currency and minute with money events, when the watermark
-- passes the minute's end (and for the open minutes at the end of input).
--
-- Late events: a money event behind the watermark goes to the late output, uncounted here
-- (settlement_daily.sql corrects its day instead).
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

-- The risk pipeline: reads the `payments` topic of the embedded log and writes card-velocity
-- alerts and per-minute settlement totals to their own topics, as windows close.
--   paystream topic create payments --partitions 8
--   paystream produce payments < data/sample_events.jsonl
--   paystream run queries/risk_pipeline.sql
--   paystream consume risk_alerts --group dash --from earliest
-- The SELECTs are those of card_velocity.sql and settlement_per_minute.sql: both read one
-- shared pass over the source.
CREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json',
                             event_time = 'event_time', watermark_delay = '5 seconds');

CREATE SINK risk_alerts WITH (connector = 'log', topic = 'risk_alerts', format = 'json');
CREATE SINK settlement WITH (connector = 'log', topic = 'settlement_per_minute', format = 'json');
CREATE SINK dead_letters WITH (connector = 'log', topic = 'payments.dlq');
CREATE SINK late_events WITH (connector = 'log', topic = 'payments.late');

-- Card velocity: 5 or more authorizations of one card in any 60-second window.
INSERT INTO risk_alerts
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

-- Settlement per merchant and currency, per minute of event time.
INSERT INTO settlement
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

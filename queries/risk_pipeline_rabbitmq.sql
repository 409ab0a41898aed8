-- The risk pipeline over RabbitMQ: consumes the durable `payments` queue and publishes
-- card-velocity alerts and per-minute settlement totals to the `risk_alerts` and
-- `settlement_per_minute` queues (declared durable when absent), as windows close.
-- The SELECTs are risk_pipeline.sql's; only the source and sinks differ.
--   scripts/services.sh start rabbitmq         # RabbitMQ on 127.0.0.1:5672 (guest/guest)
--   (declare the durable queue `payments` and publish JSON events to it, one object a message)
--   paystream run queries/risk_pipeline_rabbitmq.sql
-- Messages are acknowledged only once the checkpoint covering them is durable (a crash
-- redelivers them and deduplication drops what was counted); the sinks are at-least-once,
-- persistent and confirmed, each message with a deterministic `message_id` to drop repeats by
-- (see README, Connectors: RabbitMQ). Dead letters and late events stay in the embedded log
-- (`payments.dlq`, `payments.late`).
CREATE SOURCE payments WITH (connector = 'rabbitmq', url = 'amqp://guest:guest@127.0.0.1:5672/%2f',
                             queue = 'payments', prefetch = '20000', format = 'json',
                             event_time = 'event_time', watermark_delay = '5 seconds');

CREATE SINK risk_alerts WITH (connector = 'rabbitmq', queue = 'risk_alerts');
CREATE SINK settlement WITH (connector = 'rabbitmq', queue = 'settlement_per_minute');
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

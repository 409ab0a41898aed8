-- The risk pipeline over Kafka: reads the `payments` topic of a Kafka cluster and writes
-- card-velocity alerts and per-minute settlement totals to Kafka topics, as windows close.
-- The SELECTs are risk_pipeline.sql's; only the source and sinks differ.
--   scripts/services.sh start kafka            # a Kafka-protocol broker on 127.0.0.1:9092
--   (produce JSON events to the `payments` topic, one object a record)
--   paystream run queries/risk_pipeline_kafka.sql
-- The source's offsets are kept in the job's checkpoints (exactly-once reading) and committed
-- to the consumer group `risk` after each one; the sinks are at-least-once, keyed by card and
-- by merchant (see README, Connectors: Kafka). Dead letters and late events stay in the
-- embedded log (`payments.dlq`, `payments.late`).
CREATE SOURCE payments WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092',
                             topic = 'payments', group_id = 'risk', start_from = 'earliest',
                             format = 'json', event_time = 'event_time',
                             watermark_delay = '5 seconds');

CREATE SINK risk_alerts WITH (connector = 'kafka', topic = 'risk_alerts', key = 'card_id',
                              partitions = '6');
CREATE SINK settlement WITH (connector = 'kafka', topic = 'settlement_per_minute',
                             key = 'merchant_id', partitions = '6');
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

-- Velocity per authorization: how many authorizations the card, the device and the customer
-- behind each authorization made in the last hour and day, at how many merchants — and an
-- alert at the authorization that takes one of them to its limit.
--
-- Why: velocity limits are the first line of card risk: a card, phone or account suddenly
-- used far more often than a person does is being tested, shared or taken over. Computing the
-- features per authorization (not per window) flags the very authorization that crossed the
-- line, seconds after it happened, so it can be reviewed before capture.
--
-- How: for each key (card_id, device_id, customer_id), OVER frames of 1 hour and 24 hours
-- ending at the authorization (RANGE: every authorization up to exactly that long before,
-- ties included), across currencies. A row is emitted where the authorization brings the
-- 1-hour count to max_auths_1h or more from below it (the count of the authorizations strictly
-- before it, in frames that end 1 ms before it) — or the 24-hour count to max_auths_24h: the
-- authorization that crosses, not every one after it (a key that calms down and crosses again
-- is flagged again; authorizations with the same time that cross together are each flagged).
-- Amounts add up per currency only: the per-card amount rule is card_alerts.sql.
--
-- Parameters: max_auths_1h, max_auths_24h (authorizations per key).
--
-- Emits: one row per crossing, once the watermark passes the authorization: which key
-- (key_kind 'card', 'device' or 'customer', key_id), the authorization, its 1-hour and
-- 24-hour counts and the distinct merchants of the last hour.
--
-- Late events: an authorization behind the watermark goes to the late output; it is neither
-- scored nor counted in later authorizations' frames.
SET max_auths_1h = '8';
SET max_auths_24h = '30';

SELECT 'card' AS key_kind, card_id AS key_id, event_id, event_time, merchant_id,
       amount_minor, currency, auths_1h, merchants_1h, auths_24h
FROM (
  SELECT card_id, event_id, event_time, merchant_id, amount_minor, currency,
         count(*) OVER last_hour AS auths_1h,
         count(*) OVER hour_before AS before_1h,
         count(DISTINCT merchant_id) OVER last_hour AS merchants_1h,
         count(*) OVER last_day AS auths_24h,
         count(*) OVER day_before AS before_24h
  FROM payments
  WHERE event_type = 'authorization'
  WINDOW last_hour AS (PARTITION BY card_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
         hour_before AS (PARTITION BY card_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING),
         last_day AS (PARTITION BY card_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW),
         day_before AS (PARTITION BY card_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING))
WHERE (auths_1h >= ${max_auths_1h} AND before_1h < ${max_auths_1h})
   OR (auths_24h >= ${max_auths_24h} AND before_24h < ${max_auths_24h})
UNION ALL
SELECT 'device' AS key_kind, device_id AS key_id, event_id, event_time, merchant_id,
       amount_minor, currency, auths_1h, merchants_1h, auths_24h
FROM (
  SELECT device_id, event_id, event_time, merchant_id, amount_minor, currency,
         count(*) OVER last_hour AS auths_1h,
         count(*) OVER hour_before AS before_1h,
         count(DISTINCT merchant_id) OVER last_hour AS merchants_1h,
         count(*) OVER last_day AS auths_24h,
         count(*) OVER day_before AS before_24h
  FROM payments
  WHERE event_type = 'authorization' AND device_id IS NOT NULL
  WINDOW last_hour AS (PARTITION BY device_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
         hour_before AS (PARTITION BY device_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING),
         last_day AS (PARTITION BY device_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW),
         day_before AS (PARTITION BY device_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING))
WHERE (auths_1h >= ${max_auths_1h} AND before_1h < ${max_auths_1h})
   OR (auths_24h >= ${max_auths_24h} AND before_24h < ${max_auths_24h})
UNION ALL
SELECT 'customer' AS key_kind, customer_id AS key_id, event_id, event_time, merchant_id,
       amount_minor, currency, auths_1h, merchants_1h, auths_24h
FROM (
  SELECT customer_id, event_id, event_time, merchant_id, amount_minor, currency,
         count(*) OVER last_hour AS auths_1h,
         count(*) OVER hour_before AS before_1h,
         count(DISTINCT merchant_id) OVER last_hour AS merchants_1h,
         count(*) OVER last_day AS auths_24h,
         count(*) OVER day_before AS before_24h
  FROM payments
  WHERE event_type = 'authorization' AND customer_id IS NOT NULL
  WINDOW last_hour AS (PARTITION BY customer_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
         hour_before AS (PARTITION BY customer_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING),
         last_day AS (PARTITION BY customer_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW),
         day_before AS (PARTITION BY customer_id ORDER BY event_time
                  RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND INTERVAL '1' MILLISECOND PRECEDING))
WHERE (auths_1h >= ${max_auths_1h} AND before_1h < ${max_auths_1h})
   OR (auths_24h >= ${max_auths_24h} AND before_24h < ${max_auths_24h});

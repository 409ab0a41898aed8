-- Card risk alerts, per authorization: the card's authorizations and amount over the last
-- hour (in the payment's currency), and an alert when the card is busier or spends more than
-- usual.
--
-- Why: velocity and spend limits per card are the first rules a risk team runs; scoring each
-- authorization (not each window) flags the very payment that crossed the line.
--
-- How: OVER a RANGE frame of 1 hour per card and currency, computed for every authorization
-- once the watermark passes it; the outer WHERE is the rule (8 authorizations or 50,000.00 in
-- minor units of 2-decimal currencies).
--
-- Parameters: none (the thresholds are in the outer WHERE: this file is also run as it is by
-- the exactly-once tests; card_velocity_per_event.sql is the parameterised velocity rule).
--
-- Emits: every authorization of a card over either limit, when the watermark passes it.
--
-- Late events: an authorization behind the watermark goes to the late output; it is neither
-- scored nor counted in later authorizations' frames.
SELECT event_id, card_id, event_time, currency, amount_minor, auths_1h, amount_1h
FROM (
  SELECT event_id, card_id, event_time, currency, amount_minor,
         count(*)          OVER last_hour AS auths_1h,
         sum(amount_minor) OVER last_hour AS amount_1h
  FROM payments
  WHERE event_type = 'authorization'
  WINDOW last_hour AS (PARTITION BY card_id, currency ORDER BY event_time
                       RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)
)
WHERE auths_1h >= 8 OR amount_1h >= 5000000;

-- Card risk alerts, per authorization: the card's authorizations and amount over the last hour
-- (in the payment's currency), computed for every authorization once the watermark passes it.
-- An alert when the card is busier or spends more than usual; the outer WHERE is the rule.
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

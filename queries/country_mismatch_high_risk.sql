-- Country mismatch on high-risk merchant categories: an authorization whose IP address is in
-- another country than the card's issuer, at a merchant category fraud favours.
--
-- Why: a card used from abroad is usually a traveller; at merchants selling what resells
-- easily (electronics, telecom top-ups, hotel prepayments, digital goods) the same mismatch is
-- the strongest single signal of a stolen card. Limiting the rule to those categories keeps
-- the alert volume reviewable.
--
-- How: a stateless filter per authorization: card_country and ip_country both known and
-- different, and the merchant category code in the high_risk_mcc reference table (a VALUES
-- list here: edit it, or replace it by a CREATE TABLE over a file or topic of your own).
-- From min_amount_minor up only (in the payment's currency's minor units).
--
-- Parameters: min_amount_minor; the high_risk_mcc table (5732 electronics, 4814 telecom,
-- 7011 lodging, 5999 miscellaneous retail).
--
-- Emits: one row per such authorization, as soon as it is read (no state, no waiting for the
-- watermark): the authorization, both countries and the category.
--
-- Late events: none — a filter has no window to be late for.
SET min_amount_minor = '1000';

WITH high_risk_mcc (mcc, category) AS (
  VALUES ('5732', 'electronics'), ('4814', 'telecom'), ('7011', 'lodging'),
         ('5999', 'miscellaneous retail'))
SELECT p.event_id, p.event_time, p.card_id, p.merchant_id, p.mcc, h.category,
       p.card_country, p.ip_country, p.currency, p.amount_minor
FROM payments p
JOIN high_risk_mcc h ON h.mcc = p.mcc
WHERE p.event_type = 'authorization' AND p.card_country <> p.ip_country
  AND p.amount_minor >= ${min_amount_minor};

-- First use of a card at a merchant, for a large amount: the first authorization a card ever
-- makes at a merchant (as far as the query's state reaches back), when it is large.
--
-- Why: a returning customer's large purchase is routine; a card the merchant has never seen
-- spending big at once is how stolen cards are cashed out, and it is where a step-up check
-- (3-D Secure, manual review) costs the least goodwill.
--
-- How: ROW_NUMBER() per card and merchant in event-time order (ties by event_id) — the
-- deduplication pattern: the first row per key, emitted once the watermark passes it — kept
-- when its amount is at least min_amount_minor (minor units of the payment's currency). The
-- keys seen are kept for the source's dedup_ttl by default (`SET state_ttl = '30 days';` in
-- this file, or `--state-ttl` on replay): a card idle at a merchant longer than that is new again.
--
-- Parameters: min_amount_minor.
--
-- Emits: one row per large first authorization of a card at a merchant, when the watermark
-- passes it: the card, merchant, authorization, amount and currency.
--
-- Late events: an authorization behind the watermark goes to the late output; it is not
-- considered (a later one of the same card and merchant may then be reported as the first).
SET min_amount_minor = '500000';

SELECT card_id, merchant_id, event_id, event_time, currency, amount_minor
FROM (
  SELECT card_id, merchant_id, event_id, event_time, currency, amount_minor,
         ROW_NUMBER() OVER (PARTITION BY card_id, merchant_id
                            ORDER BY event_time, event_id) AS rn
  FROM payments
  WHERE event_type = 'authorization')
WHERE rn = 1 AND amount_minor >= ${min_amount_minor};

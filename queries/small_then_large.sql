-- Small then large: a card makes two small approved authorizations and, within a minute of
-- the first, one more than large_ratio times as large — the card was checked, then spent.
--
-- Why: a fraudster with a fresh card number first makes a purchase too small to notice; once
-- it is approved, the large one follows within seconds. Flagging the large authorization
-- before it is captured saves the whole amount.
--
-- How: a row pattern (MATCH_RECOGNIZE) over each card's approved authorizations per currency,
-- in event-time order (ties by event_id): two (S S), then one (L) more than large_ratio times
-- the larger of them, all within one minute (WITHIN is inclusive). Every authorization starts
-- a search (AFTER MATCH SKIP TO NEXT ROW), so each is checked against the two right before it.
--
-- Parameters: large_ratio (how many times the small ones the large one is).
--
-- Emits: one row per large authorization, as soon as the watermark passes it: the card, the
-- authorization, the larger small amount before it and when the first small one was made.
--
-- Late events: an authorization behind the watermark goes to the late output; it neither
-- raises an alert nor counts as a later authorization's history.
SET large_ratio = '100';

WITH approved AS (
  SELECT * FROM payments WHERE event_type = 'authorization' AND status = 'approved')
SELECT * FROM approved MATCH_RECOGNIZE (
  PARTITION BY card_id, currency
  ORDER BY event_time
  MEASURES L.event_id AS event_id, L.event_time AS event_time, L.merchant_id AS merchant_id,
           L.amount_minor AS amount_minor, MAX(S.amount_minor) AS largest_before_minor,
           FIRST(S.event_time) AS first_small_at
  ONE ROW PER MATCH
  AFTER MATCH SKIP TO NEXT ROW
  PATTERN (S S L) WITHIN INTERVAL '1' MINUTE
  DEFINE L AS L.amount_minor > ${large_ratio} * MAX(S.amount_minor)
) AS m;

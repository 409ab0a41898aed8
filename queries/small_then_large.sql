-- Small then large: a card makes two small approved authorizations and, within a minute of
-- the first, one more than large_ratio times as large — the card was checked, then spent.
--
-- Why: a fraudster with a fresh card number first makes a purchase too small to notice; once
-- it is approved, the large one follows within seconds. Flagging the large authorization
-- before it is captured saves the whole amount.
--
-- How: per card and currency, in event-time order (ties by event_id), each approved
-- authorization against the two approved ones right before it (ROWS frame, the current row
-- excluded; lag for the earlier one's time): the two are within the minute before it and it
-- is more than large_ratio times the larger of them. (The same rule as a MATCH_RECOGNIZE
-- pattern is planned for the engine's CEP support.)
--
-- Parameters: large_ratio (how many times the small ones the large one is).
--
-- Emits: one row per large authorization, once the watermark passes it: the card, the
-- authorization, the larger small amount before it and when the first small one was made.
--
-- Late events: an authorization behind the watermark goes to the late output; it neither
-- raises an alert nor counts as a later authorization's history.
SET large_ratio = '100';

SELECT card_id, currency, event_id, event_time, merchant_id, amount_minor,
       largest_before_minor, first_small_at
FROM (
  SELECT card_id, currency, event_id, event_time, merchant_id, amount_minor,
         max(amount_minor) OVER (PARTITION BY card_id, currency ORDER BY event_time, event_id
                                 ROWS BETWEEN 2 PRECEDING AND 1 PRECEDING) AS largest_before_minor,
         lag(event_time, 2) OVER (PARTITION BY card_id, currency
                                  ORDER BY event_time, event_id) AS first_small_at
  FROM payments
  WHERE event_type = 'authorization' AND status = 'approved')
WHERE first_small_at >= event_time - INTERVAL '1' MINUTE
  AND amount_minor > ${large_ratio} * largest_before_minor;

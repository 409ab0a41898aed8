-- Enumeration through one merchant: one device trying many different cards at one merchant
-- in minutes, most of them declined — a bot cycling through card numbers.
--
-- Why: enumeration rigs run generated or stolen card numbers through a weak checkout; the
-- declines cost the merchant scheme fees and the approvals are cards about to be abused. The
-- merchant and the device are where to block it.
--
-- How: per merchant, device and 5-minute window, authorizations, declines and distinct cards;
-- a window with at least min_cards distinct cards of which at least min_decline_pct percent
-- of the authorizations were declined is an attack (integer arithmetic: no rounding).
--
-- Parameters: min_cards (distinct cards from one device at one merchant in 5 minutes),
-- min_decline_pct (percent of those authorizations declined).
--
-- Emits: one row per merchant, device and window when the window closes: authorizations,
-- declines, distinct cards, and the smallest and largest amount tried.
--
-- Late events: an authorization behind the watermark goes to the late output, uncounted.
SET min_cards = '10';
SET min_decline_pct = '50';

SELECT merchant_id, device_id, window_start, window_end, authorizations, declines, cards,
       smallest_minor, largest_minor
FROM (
  SELECT merchant_id, device_id, window_start, window_end,
         count(*) AS authorizations,
         count(*) FILTER (WHERE status = 'declined') AS declines,
         count(DISTINCT card_id) AS cards,
         min(amount_minor) AS smallest_minor,
         max(amount_minor) AS largest_minor
  FROM TUMBLE(payments, event_time, INTERVAL '5' MINUTE)
  WHERE event_type = 'authorization'
  GROUP BY merchant_id, device_id, window_start, window_end)
WHERE cards >= ${min_cards} AND declines * 100 >= ${min_decline_pct} * authorizations;

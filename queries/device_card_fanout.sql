-- Many cards on one device: the devices that authorized the most distinct cards in ten
-- minutes, when that is more than a person carries.
--
-- Why: one device (a phone, a browser fingerprint) trying dozens of cards is card enumeration
-- or a card-testing rig; legitimate devices carry a few cards. Ranking the worst offenders per
-- window gives the fraud team a short, stable list instead of one alert per authorization.
--
-- How: per device and 10-minute window, authorizations, declines and the approximate number
-- of distinct cards (approx_distinct: HyperLogLog, within 2 % of the exact count); the devices
-- over min_cards, the top_n of them per window by distinct cards.
--
-- Parameters: min_cards (distinct cards above which a device is suspicious), top_n (devices
-- listed per window).
--
-- Emits: up to top_n rows per 10-minute window, when the window closes: the device, its rank,
-- distinct cards, authorizations and declines.
--
-- Late events: an authorization behind the watermark goes to the late output, uncounted.
SET min_cards = '10';
SET top_n = '5';

SELECT window_start, window_end, device_id, cards, authorizations, declines, rank
FROM (
  SELECT window_start, window_end, device_id,
         approx_distinct(card_id) AS cards,
         count(*) AS authorizations,
         count(*) FILTER (WHERE status = 'declined') AS declines,
         ROW_NUMBER() OVER (PARTITION BY window_start, window_end
                            ORDER BY approx_distinct(card_id) DESC, device_id) AS rank
  FROM TUMBLE(payments, event_time, INTERVAL '10' MINUTE)
  WHERE event_type = 'authorization'
  GROUP BY device_id, window_start, window_end
  HAVING approx_distinct(card_id) > ${min_cards})
WHERE rank <= ${top_n};

-- Card sessions: each card's bursts of activity, closed after 30 seconds without an
-- authorization — authorizations, amount and distinct merchants per session.
--
-- Why: a session is how a person (or a bot) uses a card in one sitting; its length, spend and
-- merchant count are the features risk models and analysts start from.
--
-- How: SESSION windows with a 30 s gap per card and currency (grouped by currency as well, so
-- a total never adds amounts of different currencies).
--
-- Parameters: none (the gap is the INTERVAL; this file is also the engine's golden sample
-- query; card_testing_burst.sql is the parameterised alert over the same sessions).
--
-- Emits: one row per card, currency and session, when the watermark passes the session's last
-- authorization plus the gap.
--
-- Late events: an authorization behind the watermark goes to the late output; a session is
-- never reopened.
SELECT
  card_id,
  currency,
  window_start,
  window_end,
  count(*) AS authorizations,
  sum(amount_minor) AS total_minor,
  count(DISTINCT merchant_id) AS merchants
FROM SESSION(payments, event_time, INTERVAL '30' SECOND)
WHERE event_type = 'authorization'
GROUP BY card_id, currency, window_start, window_end;

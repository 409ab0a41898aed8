-- Authorizations not captured in time: approved authorizations with neither a capture nor a
-- void of the same payment within the validity period — money held on a card that the
-- merchant never collected.
--
-- Why: an authorization reserves the card holder's funds; if it is neither captured nor
-- voided before it expires, the merchant loses the sale (a capture after expiry may be
-- declined or downgraded) and the card holder sees a hold that never resolves. Settlement
-- teams chase these before the validity runs out.
--
-- How: an interval LEFT JOIN of the stream with itself: each approved authorization against
-- a capture or void of its payment_id from the authorization's time to validity_days after
-- it; an authorization the watermark passes the end of that interval without one is emitted
-- with NULLs on the right (at the end of input, every one still unmatched). State: the
-- approved authorizations of the last validity_days days.
--
-- Parameters: validity_days (days an authorization may wait for its capture).
--
-- Emits: one row per approved authorization left open, when its validity has passed: the
-- payment, merchant, currency, amount and when it was authorized.
--
-- Late events: a capture or void behind the watermark goes to the late output; its
-- authorization may then be reported although it was captured (the late output says which).
SET validity_days = '7';

SELECT a.payment_id, a.merchant_id, a.currency, a.amount_minor, a.event_time AS authorized_at
FROM payments a
LEFT JOIN payments c
  ON c.payment_id = a.payment_id AND c.event_type IN ('capture', 'void')
 AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '${validity_days}' DAY
WHERE a.event_type = 'authorization' AND a.status = 'approved' AND c.payment_id IS NULL;

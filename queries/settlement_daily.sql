-- Daily settlement per merchant business date, with corrections: captures, refunds,
-- chargebacks and fees per merchant, currency and business date — the merchant's own day, in
-- its time zone and up to its daily close. A money event that arrives after its day was
-- reported corrects that day while it is within the allowed lateness, and beyond it is booked
-- into the day still open as an adjustment: nothing is dropped, and no day closed long ago
-- moves. (Chargeback reversals are not counted here, as in settlement_per_minute.sql; a
-- merchant missing from the merchants table is left out — the inner join — so keep the table
-- complete.)
--
-- Why: merchants are paid out per business day in their currency, and the payout file must
-- add up to the cent. Captures and refunds arrive late all the time (batch files from
-- acquirers, retries, outages); a settlement that drops them underpays someone, and one that
-- rewrites a day paid out weeks ago breaks reconciliation.
--
-- How: a GROUP BY without a window (updating results): each event is booked at
-- booking_time(event_time, allowed_lateness) — its own time, or, when it arrives more than
-- the allowed lateness behind the stream (the watermark it arrived under), that watermark —
-- and its business date is business_date(booking time, tz, close_time) with tz and close_time
-- from the merchants reference table (a CSV file: merchant_id, IANA zone, close as HH:MM; an
-- event at or after the close belongs to the next business date). Net = captured − refunded
-- − charged back − fees. Money booked at the watermark is also counted in adjustments and
-- adjustment_net_minor of the day it lands in.
--
-- Parameters: merchants_file (the merchants table: `merchant_id,tz,close_time`),
-- allowed_lateness (how long a reported day still takes corrections, an interval such as
-- '7 days').
--
-- Emits: a changelog — the day's row with `op` = insert the first time, update after each
-- watermark step that changed it (late money included) and at the end of input. A keyed sink
-- (a log topic keyed by the group, the serve result table, PostgreSQL upserts) holds the
-- current totals; applying the changelog in order gives exactly the totals over every event,
-- each on the day it was booked.
--
-- Late events: none are dropped — a late capture or refund corrects its day, or, later than
-- allowed_lateness, adjusts the open one. Replaying the same input books every event as the
-- live run did (the watermark each arrived under is the same). State: one row of totals per
-- merchant, currency and business date, kept (a state_ttl would end a day with a `delete`,
-- which a payout table must not see).
SET merchants_file = 'queries/data/merchants.csv';
SET allowed_lateness = '7 days';

CREATE TABLE merchants (merchant_id VARCHAR PRIMARY KEY, tz VARCHAR, close_time VARCHAR)
  WITH (connector = 'file', path = '${merchants_file}', format = 'csv');

SELECT p.merchant_id, p.currency,
       business_date(booking_time(p.event_time, INTERVAL '${allowed_lateness}'), m.tz, m.close_time)
         AS business_date,
       count(*) FILTER (WHERE p.event_type = 'capture') AS captures,
       coalesce(sum(p.amount_minor) FILTER (WHERE p.event_type = 'capture'), 0) AS captured_minor,
       coalesce(sum(p.amount_minor) FILTER (WHERE p.event_type = 'refund'), 0) AS refunded_minor,
       coalesce(sum(p.amount_minor) FILTER (WHERE p.event_type = 'chargeback'), 0)
         AS chargeback_minor,
       coalesce(sum(p.fee_minor), 0) AS fees_minor,
       coalesce(sum(p.amount_minor) FILTER (WHERE p.event_type = 'capture'), 0)
         - coalesce(sum(p.amount_minor) FILTER (WHERE p.event_type = 'refund'), 0)
         - coalesce(sum(p.amount_minor) FILTER (WHERE p.event_type = 'chargeback'), 0)
         - coalesce(sum(p.fee_minor), 0) AS net_minor,
       count(*) FILTER (WHERE booking_time(p.event_time, INTERVAL '${allowed_lateness}')
                              > p.event_time) AS adjustments,
       coalesce(sum(CASE WHEN p.event_type = 'capture' THEN p.amount_minor ELSE -p.amount_minor END
                    - coalesce(p.fee_minor, 0))
                FILTER (WHERE booking_time(p.event_time, INTERVAL '${allowed_lateness}')
                              > p.event_time), 0) AS adjustment_net_minor
FROM payments p
JOIN merchants m ON m.merchant_id = p.merchant_id
WHERE p.event_type IN ('capture', 'refund', 'chargeback')
GROUP BY p.merchant_id, p.currency,
         business_date(booking_time(p.event_time, INTERVAL '${allowed_lateness}'), m.tz, m.close_time);

-- Blocklisted card or device: an authorization from a card or a device on the team's
-- blocklists (reference tables from files, with the reason each was listed).
--
-- Why: cards reported stolen, devices tied to a fraud ring or an emulator farm: a known bad
-- actor coming back is the cheapest fraud to stop, if the match happens while the payment is
-- still in flight rather than in tomorrow's batch.
--
-- How: a lookup join of each authorization with two reference tables keyed by card_id and
-- device_id (CSV files with a header; edit them, or point the parameters at your own files —
-- a relative path is relative to the working directory). A file that changes while the query
-- runs is read again: later authorizations see the new list.
--
-- Parameters: blocked_cards_file, blocked_devices_file (CSV: `card_id,reason` and
-- `device_id,reason`).
--
-- Emits: one row per authorization from a listed card or device, as soon as it is read: the
-- authorization and the reason(s) it matched.
--
-- Late events: none — a lookup join has no window to be late for.
SET blocked_cards_file = 'queries/data/blocked_cards.csv';
SET blocked_devices_file = 'queries/data/blocked_devices.csv';

CREATE TABLE blocked_cards (card_id VARCHAR PRIMARY KEY, reason VARCHAR)
  WITH (connector = 'file', path = '${blocked_cards_file}', format = 'csv');
CREATE TABLE blocked_devices (device_id VARCHAR PRIMARY KEY, reason VARCHAR)
  WITH (connector = 'file', path = '${blocked_devices_file}', format = 'csv');

SELECT p.event_id, p.event_time, p.card_id, p.device_id, p.merchant_id, p.currency,
       p.amount_minor, bc.reason AS card_reason, bd.reason AS device_reason
FROM payments p
LEFT JOIN blocked_cards bc ON bc.card_id = p.card_id
LEFT JOIN blocked_devices bd ON bd.device_id = p.device_id
WHERE p.event_type = 'authorization'
  AND (bc.card_id IS NOT NULL OR bd.device_id IS NOT NULL);

-- New-country mix: a merchant whose authorizations of a minute come from IPs abroad (in
-- another country than the card's issuer) far more than its own recent minutes did.
--
-- Why: a merchant's buyers come from a stable mix of countries. A sudden run of
-- authorizations from IPs abroad — often in countries the merchant has never seen — is a bot
-- farm, a leaked checkout or a fraud ring working stolen cards from elsewhere, and it shows
-- here minutes after it starts, weeks before the chargebacks do.
--
-- How: per merchant per minute, its authorizations, those from an IP country other than the
-- card's, and the distinct IP countries. Dense windows (SET dense_windows) give a merchant's
-- quiet minute a row of zeros, so the baseline of a small merchant counts its quiet minutes
-- instead of skipping them. Each minute's count from abroad is scored with ewma_zscore against
-- the merchant's earlier minutes (the minute itself not in its baseline).
--
-- Parameters: alpha (how fast the baseline forgets), warmup (minutes of history before a
-- score), abroad_z (the score that raises an alert), min_abroad (fewer authorizations from
-- abroad in the minute raise nothing: one foreign buyer at a quiet merchant is no burst).
-- state_ttl: a merchant without authorizations for that long stops getting rows.
--
-- Emits: one row per merchant and minute above abroad_z, when the minute closes: the merchant,
-- the minute, authorizations, those from abroad, the distinct IP countries and the score.
--
-- Late events: an authorization behind the watermark goes to the late output, uncounted.
SET dense_windows = 'true';
SET state_ttl = '1h';
SET alpha = '0.2';
SET warmup = '5';
SET abroad_z = '6';
SET min_abroad = '20';

WITH per_minute AS (
  SELECT merchant_id, window_start, window_end,
         count(*) AS authorizations,
         count(*) FILTER (WHERE ip_country <> card_country) AS abroad,
         count(DISTINCT ip_country) AS countries
  FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)
  WHERE event_type = 'authorization'
  GROUP BY merchant_id, window_start, window_end)
SELECT * FROM (
  SELECT merchant_id, window_start, window_end, authorizations, abroad, countries,
         round(ewma_zscore(abroad, ${alpha}, ${warmup})
               OVER (PARTITION BY merchant_id ORDER BY window_start), 2) AS score
  FROM per_minute)
WHERE score > ${abroad_z} AND abroad >= ${min_abroad};

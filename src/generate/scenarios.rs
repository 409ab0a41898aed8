//! Patterns the library's rules look for, planted in the generated stream on request
//! (`paystream gen --scenarios …`): each rule's test needs a stream that holds its pattern, and
//! one that does not.
//!
//! None is on by default, and each draws from the random stream only when it is on, so a seed
//! without scenarios gives the bytes it always gave.

use rand::Rng;

use super::model::{Event, Gen};
use super::{GenConfig, Lifecycle};

/// Which scenarios a stream holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scenarios {
    /// A card makes two to four small approved authorizations seconds apart at one merchant,
    /// then a large one (more than 100 times each small one) within a minute of the first: a
    /// fraudster checking a card works before spending on it.
    pub small_then_large: bool,
    /// Half of the chargebacks that are not reversed are followed by a refund of the same
    /// payment: the merchant refunds money the card holder already got back.
    pub refund_after_chargeback: bool,
    /// One merchant's ticket size (every authorization's amount) grows eightfold from
    /// [`TICKET_SHIFT_AT_MS`] after the start.
    pub ticket_shift: bool,
    /// One in a hundred captures and refunds reaches the stream long after it happened
    /// (minutes with fast lifecycles, days with realistic ones): money booked on a business
    /// day already reported.
    pub late_money: bool,
    /// One merchant's captures are charged back one time in ten (the others' one in 170)
    /// from [`DISPUTE_WAVE_AT_MS`] after the start: a merchant in a dispute wave.
    pub dispute_wave: bool,
    /// One merchant's authorizations are declined six times in ten for two minutes from
    /// [`DECLINE_WAVE_AT_MS`] after the start (the others' one in twelve): its acquirer's or an
    /// issuer's outage, a broken integration.
    pub decline_wave: bool,
    /// Six in ten of one merchant's authorizations come from IPs in countries its cards are
    /// not from — most in countries the stream has never seen — for four minutes from
    /// [`NEW_COUNTRY_AT_MS`] after the start: a new-country burst (a bot farm abroad, a
    /// leaked checkout).
    pub new_country: bool,
}

impl Scenarios {
    /// The names `--scenarios` takes, each with what it plants.
    pub const NAMES: [&str; 7] = [
        "small-then-large",
        "refund-after-chargeback",
        "ticket-shift",
        "late-money",
        "dispute-wave",
        "decline-wave",
        "new-country",
    ];

    /// Every scenario.
    pub fn all() -> Self {
        Scenarios {
            small_then_large: true,
            refund_after_chargeback: true,
            ticket_shift: true,
            late_money: true,
            dispute_wave: true,
            decline_wave: true,
            new_country: true,
        }
    }

    /// Parses a comma-separated list of [`Scenarios::NAMES`], `all`, or `none` alone.
    pub fn parse(list: &str) -> Result<Self, String> {
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.len() > 1 && names.contains(&"none") {
            return Err(format!(
                "`none` means no scenario; it cannot be listed with others ({list:?})"
            ));
        }
        let mut s = Scenarios::default();
        for name in names {
            match name {
                "none" => {}
                "all" => s = Scenarios::all(),
                "small-then-large" => s.small_then_large = true,
                "refund-after-chargeback" => s.refund_after_chargeback = true,
                "ticket-shift" => s.ticket_shift = true,
                "late-money" => s.late_money = true,
                "dispute-wave" => s.dispute_wave = true,
                "decline-wave" => s.decline_wave = true,
                "new-country" => s.new_country = true,
                other => {
                    return Err(format!(
                        "unknown scenario {other:?}: use {}, all or none",
                        Scenarios::NAMES.join(", ")
                    ));
                }
            }
        }
        Ok(s)
    }
}

/// When the ticket-shift merchant's amounts grow, after the start.
pub const TICKET_SHIFT_AT_MS: i64 = 15 * 60_000;

/// The merchant whose ticket size shifts (not the one whose volume spikes).
pub fn ticket_shift_merchant(cfg: &GenConfig) -> u32 {
    3 % cfg.merchants.max(1)
}

/// When the dispute-wave merchant's captures start being charged back more, after the start.
pub const DISPUTE_WAVE_AT_MS: i64 = 10 * 60_000;

/// The merchant in a dispute wave (neither the spiking nor the ticket-shift one).
pub fn dispute_wave_merchant(cfg: &GenConfig) -> u32 {
    5 % cfg.merchants.max(1)
}

/// When the decline-wave merchant's authorizations start being declined, after the start; the
/// wave lasts [`DECLINE_WAVE_MS`].
pub const DECLINE_WAVE_AT_MS: i64 = 8 * 60_000;

/// How long the decline wave lasts.
pub const DECLINE_WAVE_MS: i64 = 2 * 60_000;

/// The merchant in a decline wave (none of the other scenarios' merchants).
pub fn decline_wave_merchant(cfg: &GenConfig) -> u32 {
    9 % cfg.merchants.max(1)
}

/// The decline rate of an ordinary authorization at `merchant` at `time`: `usual`, or the
/// wave's. The same single draw either way, so other streams keep their bytes.
pub(super) fn decline_rate(cfg: &GenConfig, merchant: u32, time: i64, usual: f64) -> f64 {
    let wave = cfg.start + DECLINE_WAVE_AT_MS;
    if cfg.scenarios.decline_wave
        && merchant == decline_wave_merchant(cfg)
        && (wave..wave + DECLINE_WAVE_MS).contains(&time)
    {
        0.6
    } else {
        usual
    }
}

/// When the new-country burst starts, after the start; it lasts [`NEW_COUNTRY_MS`].
pub const NEW_COUNTRY_AT_MS: i64 = 12 * 60_000;

/// How long the new-country burst lasts.
pub const NEW_COUNTRY_MS: i64 = 4 * 60_000;

/// The merchant of the new-country burst (none of the other scenarios' merchants).
pub fn new_country_merchant(cfg: &GenConfig) -> u32 {
    7 % cfg.merchants.max(1)
}

/// IP countries of the burst: none a generated card is issued in.
const NEW_COUNTRIES: [&str; 6] = ["BR", "NG", "VN", "ID", "TR", "RO"];

/// Moves the authorization `e`'s IP abroad when it is in the new-country burst (drawn only
/// then).
pub(super) fn new_country(g: &mut Gen, e: &mut Event) {
    let burst = g.cfg.start + NEW_COUNTRY_AT_MS;
    if g.cfg.scenarios.new_country
        && e.merchant == new_country_merchant(&g.cfg)
        && (burst..burst + NEW_COUNTRY_MS).contains(&e.time)
        && g.rng.random_bool(0.6)
    {
        e.ip_country = match g.rng.random_range(0..4) {
            0 => super::model::COUNTRIES[g.rng.random_range(0..super::model::COUNTRIES.len())],
            _ => NEW_COUNTRIES[g.rng.random_range(0..NEW_COUNTRIES.len())],
        };
    }
}

/// Whether the capture `e` is charged back because of the dispute wave (drawn only when the
/// wave is on and `e` is its merchant's, so other streams keep their bytes).
pub(super) fn wave_chargeback(g: &mut Gen, e: &Event) -> bool {
    g.cfg.scenarios.dispute_wave
        && e.merchant == dispute_wave_merchant(&g.cfg)
        && e.time >= g.cfg.start + DISPUTE_WAVE_AT_MS
        && g.rng.random_bool(0.1)
}

/// How long after it happened a late money event is delivered: minutes with fast lifecycles
/// (a test's stream spans minutes), one to three days with realistic ones.
pub(super) fn late_money_delay(g: &mut Gen) -> i64 {
    match g.cfg.lifecycle {
        Lifecycle::Fast => g.rng.random_range(5 * 60_000..15 * 60_000),
        Lifecycle::Realistic => g.rng.random_range(86_400_000..3 * 86_400_000),
    }
}

/// The authorizations of one small-then-large pattern starting at `now`.
pub(super) fn small_then_large(g: &mut Gen, now: i64) -> Vec<Event> {
    let card = g.rng.random_range(0..g.cfg.cards.max(1));
    let merchant = g.rng.random_range(0..g.cfg.merchants.max(1));
    let mut out = Vec::new();
    let mut t = now;
    for _ in 0..g.rng.random_range(2..=4) {
        out.push(g.authorization(t, merchant, card, true, 0.0));
        t += g.rng.random_range(2_000..10_000);
    }
    let largest = out.iter().map(|e| e.amount).max().unwrap_or(1);
    let mut large = g.authorization(t, merchant, card, true, 0.0);
    large.amount = largest * g.rng.random_range(150..400);
    out.push(large);
    out
}

/// The amount of an ordinary authorization at `merchant` at `time`, shifted when the ticket
/// shift is on.
pub(super) fn ticket(cfg: &GenConfig, merchant: u32, time: i64, amount: i64) -> i64 {
    if cfg.scenarios.ticket_shift
        && merchant == ticket_shift_merchant(cfg)
        && time >= cfg.start + TICKET_SHIFT_AT_MS
    {
        amount * 8
    } else {
        amount
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value;

    use super::*;
    use crate::generate::generated_lines;
    use crate::time::parse_rfc3339_millis;

    fn stream(scenarios: Scenarios) -> Vec<Value> {
        let cfg = GenConfig {
            events: 40_000,
            seed: 5,
            rate: 20.0,
            merchants: 12,
            attacks: false,
            spike_at_ms: None,
            scenarios,
            ..GenConfig::default()
        };
        generated_lines(&cfg)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn time(e: &Value) -> i64 {
        parse_rfc3339_millis(e["event_time"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn each_scenario_plants_its_pattern_and_only_when_asked() {
        for on in [false, true] {
            let s = if on {
                Scenarios::all()
            } else {
                Scenarios::default()
            };
            let events = stream(s);
            // Small then large: an authorization over 100 times each of the card's two or
            // more authorizations of the minute before it.
            let mut by_card: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
            for e in events.iter().filter(|e| e["event_type"] == "authorization") {
                by_card
                    .entry(e["card_id"].as_str().unwrap())
                    .or_default()
                    .push((time(e), e["amount_minor"].as_i64().unwrap()));
            }
            by_card.values_mut().for_each(|a| a.sort());
            let small_then_large = by_card
                .values()
                .filter(|auths| {
                    auths.iter().any(|&(t, a)| {
                        let before: Vec<i64> = auths
                            .iter()
                            .filter(|(u, _)| *u < t && *u >= t - 60_000)
                            .map(|(_, b)| *b)
                            .collect();
                        before.len() >= 2 && before.iter().all(|b| a > 100 * b)
                    })
                })
                .count();
            // Refund after chargeback, by payment.
            let mut kinds: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
            for e in &events {
                kinds
                    .entry(e["payment_id"].as_str().unwrap())
                    .or_default()
                    .push((time(e), e["event_type"].as_str().unwrap()));
            }
            let refunded_after_chargeback = kinds
                .values()
                .filter(|k| {
                    k.iter().any(|(c, kc)| {
                        *kc == "chargeback" && k.iter().any(|(r, kr)| *kr == "refund" && r > c)
                    })
                })
                .count();
            // Ticket shift: m_0003's mean authorization before and after the shift.
            let mean = |after: bool| {
                let shift = GenConfig::default().start + TICKET_SHIFT_AT_MS;
                let a: Vec<i64> = events
                    .iter()
                    .filter(|e| {
                        e["event_type"] == "authorization"
                            && e["merchant_id"] == "m_0003"
                            && (time(e) >= shift) == after
                    })
                    .map(|e| e["amount_minor"].as_i64().unwrap())
                    .collect();
                a.iter().sum::<i64>() / a.len().max(1) as i64
            };
            // Late money: captures and refunds delivered 5 minutes or more behind the latest
            // event time seen before them.
            let mut latest = 0;
            let mut late = 0;
            for e in &events {
                let t = time(e);
                if latest - t >= 5 * 60_000 {
                    assert!(matches!(
                        e["event_type"].as_str(),
                        Some("capture" | "refund")
                    ));
                    late += 1;
                }
                latest = latest.max(t);
            }
            // Dispute wave: m_0005's chargebacks against the busiest other merchant's.
            let mut chargebacks: HashMap<&str, u32> = HashMap::new();
            for e in events.iter().filter(|e| e["event_type"] == "chargeback") {
                *chargebacks
                    .entry(e["merchant_id"].as_str().unwrap())
                    .or_default() += 1;
            }
            let wave = chargebacks.get("m_0005").copied().unwrap_or(0);
            // Decline wave: m_0009's declines in its two minutes against the other merchants'
            // rate then.
            let at = GenConfig::default().start + DECLINE_WAVE_AT_MS;
            let (mut wave_auths, mut wave_declines, mut other_auths, mut other_declines) =
                (0, 0, 0, 0);
            for e in events.iter().filter(|e| {
                e["event_type"] == "authorization" && (at..at + DECLINE_WAVE_MS).contains(&time(e))
            }) {
                let declined = u32::from(e["status"] == "declined");
                if e["merchant_id"] == "m_0009" {
                    wave_auths += 1;
                    wave_declines += declined;
                } else {
                    other_auths += 1;
                    other_declines += declined;
                }
            }
            let wave_rate = f64::from(wave_declines) / f64::from(wave_auths.max(1));
            let other_rate = f64::from(other_declines) / f64::from(other_auths.max(1));
            // New country: m_0007's authorizations from IPs in a country its card is not from,
            // during the burst.
            let burst = GenConfig::default().start + NEW_COUNTRY_AT_MS;
            let (mut burst_auths, mut abroad) = (0u32, 0u32);
            for e in events.iter().filter(|e| {
                e["event_type"] == "authorization"
                    && e["merchant_id"] == "m_0007"
                    && (burst..burst + NEW_COUNTRY_MS).contains(&time(e))
            }) {
                burst_auths += 1;
                abroad += u32::from(e["ip_country"] != e["card_country"]);
            }
            let abroad_share = f64::from(abroad) / f64::from(burst_auths.max(1));
            let others = chargebacks
                .iter()
                .filter(|(m, _)| **m != "m_0005")
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            if on {
                assert!(
                    wave_rate > 0.4 && other_rate < 0.15,
                    "{wave_rate} {other_rate}"
                );
                assert!(abroad_share > 0.4, "{abroad_share}");
                assert!(wave > 3 * others, "{wave} {others}");
                assert!(small_then_large >= 5, "{small_then_large}");
                assert!(
                    refunded_after_chargeback >= 5,
                    "{refunded_after_chargeback}"
                );
                assert!(
                    mean(true) > 4 * mean(false),
                    "{} {}",
                    mean(true),
                    mean(false)
                );
                assert!(late >= 20, "{late}");
            } else {
                assert_eq!(
                    (small_then_large, refunded_after_chargeback, late),
                    (0, 0, 0)
                );
                assert!(mean(true) < 3 * mean(false));
                assert!(wave < 3 * others.max(1), "{wave} {others}");
                assert!(wave_rate < 0.2, "{wave_rate}");
                assert!(abroad_share < 0.15, "{abroad_share}");
            }
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!(Scenarios::parse("none"), Ok(Scenarios::default()));
        assert_eq!(Scenarios::parse("all"), Ok(Scenarios::all()));
        let s = Scenarios::parse("small-then-large, late-money").unwrap();
        assert!(s.small_then_large && s.late_money && !s.ticket_shift);
        assert!(
            Scenarios::parse("spike")
                .unwrap_err()
                .contains("small-then-large")
        );
        assert!(Scenarios::parse("all,none").unwrap_err().contains("none"));
    }
}

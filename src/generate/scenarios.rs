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
}

impl Scenarios {
    /// The names `--scenarios` takes, each with what it plants.
    pub const NAMES: [&str; 5] = [
        "small-then-large",
        "refund-after-chargeback",
        "ticket-shift",
        "late-money",
        "dispute-wave",
    ];

    /// Every scenario.
    pub fn all() -> Self {
        Scenarios {
            small_then_large: true,
            refund_after_chargeback: true,
            ticket_shift: true,
            late_money: true,
            dispute_wave: true,
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
            let others = chargebacks
                .iter()
                .filter(|(m, _)| **m != "m_0005")
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            if on {
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

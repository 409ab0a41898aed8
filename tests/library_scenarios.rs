//! The library's rules for patterns `paystream gen --scenarios` plants (small then large,
//! refund after chargeback, a merchant's ticket shift): each rule's rows are pinned
//! (`tests/golden/<query>.jsonl`), are what the test computes independently from the events
//! (or, for the approximate medians, are the shifted merchant's first minutes), are the same
//! from a log topic, and a stream without the pattern raises nothing.

use std::collections::{BTreeSet, HashMap};

use paystream::generate::{
    DECLINE_WAVE_AT_MS, DECLINE_WAVE_MS, GenConfig, NEW_COUNTRY_AT_MS, Scenarios,
    TICKET_SHIFT_AT_MS,
};
use paystream::time::parse_rfc3339_millis;
use serde_json::Value;

use crate::golden::check_golden;
use crate::library::{distinct_events, events, field_set, from_topic, replayed, time};

/// About 25 minutes of 20 new authorizations a second over `merchants` merchants and 50,000
/// cards, no attacks, with `scenarios`.
fn traffic(merchants: u32, scenarios: Scenarios) -> GenConfig {
    GenConfig {
        events: 60_000,
        seed: 11,
        rate: 20.0,
        merchants,
        cards: 50_000,
        spike_at_ms: None,
        attacks: false,
        scenarios,
        ..GenConfig::default()
    }
}

/// Per card and currency, in (time, event_id) order, the approved authorizations more than
/// 100 times each of the two before them, both within the minute before.
#[test]
fn small_then_large_flags_each_large_authorization_after_small_ones() {
    let dir = tempfile::tempdir().unwrap();
    let name = "small_then_large";
    let planted = Scenarios {
        small_then_large: true,
        ..Scenarios::default()
    };
    let file = events(dir.path(), "planted", &traffic(12, planted));
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    // (card, currency) → (time, event id, amount) of each approved authorization.
    type Auths = Vec<(i64, String, i64)>;
    let mut by_card: HashMap<(String, String), Auths> = HashMap::new();
    for e in distinct_events(&file) {
        if e["event_type"] == "authorization" && e["status"] == "approved" {
            by_card
                .entry((e["card_id"].to_string(), e["currency"].to_string()))
                .or_default()
                .push((
                    time(&e),
                    e["event_id"].to_string(),
                    e["amount_minor"].as_i64().unwrap(),
                ));
        }
    }
    let mut want = BTreeSet::new();
    for auths in by_card.values_mut() {
        auths.sort();
        for w in auths.windows(3) {
            let [(t0, _, a0), (_, _, a1), (t, id, a)] = w else {
                unreachable!()
            };
            if *t0 >= t - 60_000 && *a > 100 * a0.max(a1) {
                want.insert(id.clone());
            }
        }
    }
    assert!(
        want.len() >= 10,
        "the scenario planted the pattern: {want:?}"
    );
    assert_eq!(field_set(&rows, "event_id"), want);
    assert_eq!(from_topic(name, &file), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(12, Scenarios::default()));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

/// Each chargeback paired with every refund of its payment at or after it, within 30 days.
#[test]
fn refund_after_chargeback_pairs_every_refund_after_a_chargeback() {
    let dir = tempfile::tempdir().unwrap();
    let name = "refund_after_chargeback";
    let planted = Scenarios {
        refund_after_chargeback: true,
        ..Scenarios::default()
    };
    let file = events(dir.path(), "planted", &traffic(12, planted));
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    let mut by_payment: HashMap<String, Vec<(String, i64, i64)>> = HashMap::new();
    for e in distinct_events(&file) {
        by_payment
            .entry(e["payment_id"].as_str().unwrap().to_string())
            .or_default()
            .push((
                e["event_type"].as_str().unwrap().to_string(),
                time(&e),
                e["amount_minor"].as_i64().unwrap(),
            ));
    }
    let mut want = BTreeSet::new();
    for (payment, events) in &by_payment {
        for (kc, tc, ac) in events.iter().filter(|(k, ..)| k == "chargeback") {
            for (_, tr, ar) in events.iter().filter(|(k, ..)| k == "refund") {
                if tc <= tr && *tr <= tc + 30 * 86_400_000 {
                    want.insert(format!("{payment} {kc} {tc} {tr} {ac} {ar}"));
                }
            }
        }
    }
    assert!(
        want.len() >= 10,
        "the scenario planted the pattern: {want:?}"
    );
    let got: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r).unwrap();
            let t = |k: &str| parse_rfc3339_millis(v[k].as_str().unwrap()).unwrap();
            format!(
                "{} chargeback {} {} {} {}",
                v["payment_id"].as_str().unwrap(),
                t("charged_back_at"),
                t("refunded_at"),
                v["chargeback_minor"],
                v["refund_minor"]
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(from_topic(name, &file), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(12, Scenarios::default()));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

/// The merchant whose amounts grow eightfold is flagged in the first minutes after the shift
/// and no other merchant or minute is, from a file and from a topic; the same traffic without
/// the shift raises nothing. (From a topic the rows are checked alike, not compared: a
/// t-digest's median depends on the order it merges its input in, and a topic's partitions
/// interleave otherwise than the file's lines.)
#[test]
fn amount_distribution_shift_flags_the_shifted_merchant() {
    let dir = tempfile::tempdir().unwrap();
    let name = "amount_distribution_shift";
    let planted = Scenarios {
        ticket_shift: true,
        ..Scenarios::default()
    };
    // Four merchants: about 300 authorizations per merchant-minute, a steady median.
    let file = events(dir.path(), "planted", &traffic(4, planted));
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    flags_the_shift(&rows);
    flags_the_shift(&from_topic(name, &file));
    let clean = events(dir.path(), "clean", &traffic(4, Scenarios::default()));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

fn flags_the_shift(rows: &[String]) {
    let shift = GenConfig::default().start + TICKET_SHIFT_AT_MS;
    for r in rows {
        let v: Value = serde_json::from_str(r).unwrap();
        assert_eq!(v["merchant_id"], "m_0003", "{r}");
        let start = parse_rfc3339_millis(v["window_start"].as_str().unwrap()).unwrap();
        assert!(
            (shift..shift + 10 * 60_000).contains(&start),
            "flagged after the baseline took the shift in: {r}"
        );
        assert!(v["score"].as_f64().unwrap() > 6.0, "{r}");
    }
    assert!(
        rows.iter()
            .any(|r| r.contains("\"2026-11-01T00:15:00.000Z\"")),
        "the first shifted minute is flagged: {rows:?}"
    );
}

/// Per merchant, currency and hour, at least 5 chargebacks and 150 basis points of the
/// captures — computed here — are the rows: the dispute-wave merchant's hour; none without the
/// wave.
#[test]
fn dispute_ratio_flags_the_merchant_in_a_dispute_wave() {
    let dir = tempfile::tempdir().unwrap();
    let name = "dispute_ratio";
    let planted = Scenarios {
        dispute_wave: true,
        ..Scenarios::default()
    };
    let file = events(dir.path(), "planted", &traffic(12, planted));
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    let mut hours: HashMap<(String, String, i64), (i64, i64)> = HashMap::new();
    for e in distinct_events(&file) {
        let kind = e["event_type"].as_str().unwrap();
        if kind == "capture" || kind == "chargeback" {
            let t = time(&e);
            let h = hours
                .entry((
                    e["merchant_id"].as_str().unwrap().to_string(),
                    e["currency"].as_str().unwrap().to_string(),
                    t - t % 3_600_000,
                ))
                .or_default();
            if kind == "capture" {
                h.0 += 1;
            } else {
                h.1 += 1;
            }
        }
    }
    let want: BTreeSet<String> = hours
        .into_iter()
        .filter(|(_, (captures, chargebacks))| {
            *chargebacks >= 5 && *captures > 0 && chargebacks * 10_000 >= 150 * captures
        })
        .map(|((m, c, _), (captures, chargebacks))| {
            format!(
                "{m} {c} {captures} {chargebacks} {}",
                chargebacks * 10_000 / captures
            )
        })
        .collect();
    assert_eq!(want.len(), 1, "{want:?}");
    assert!(want.iter().all(|w| w.starts_with("m_0005 ")), "{want:?}");
    let got: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r).unwrap();
            format!(
                "{} {} {} {} {}",
                v["merchant_id"].as_str().unwrap(),
                v["currency"].as_str().unwrap(),
                v["captures"],
                v["chargebacks"],
                v["dispute_bps"]
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(from_topic(name, &file), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(12, Scenarios::default()));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

/// The decline wave (merchant m_0009's authorizations mostly declined for two minutes) is what
/// `decline_rate_spike` reports: each of its alerts is m_0009 in the wave's minutes, and there
/// is one.
#[test]
fn decline_rate_spike_flags_the_decline_wave() {
    let dir = tempfile::tempdir().unwrap();
    let name = "decline_rate_spike";
    let planted = Scenarios {
        decline_wave: true,
        ..Scenarios::default()
    };
    let file = events(dir.path(), "planted", &traffic(12, planted));
    let rows = replayed(name, &file);
    let start = GenConfig::default().start + DECLINE_WAVE_AT_MS;
    assert!(!rows.is_empty(), "the wave is found");
    for r in &rows {
        let a: Value = serde_json::from_str(r).unwrap();
        let minute = parse_rfc3339_millis(a["window_start"].as_str().unwrap()).unwrap();
        assert_eq!(a["merchant_id"], "m_0009", "{r}");
        assert!(
            (start..start + DECLINE_WAVE_MS).contains(&minute),
            "{r} is outside the wave"
        );
    }
    assert_eq!(from_topic(name, &file), rows, "from a topic");
}

/// `new_country_mix`: per merchant and minute (every minute from its first, the quiet ones as
/// zeros), the authorizations from an IP abroad scored by the EWMA z definition,
/// computed here; the rows are the minutes above 6 with at least 20 from abroad — the burst's
/// first minute at m_0007 — and a stream without the burst raises none.
#[test]
fn new_country_mix_flags_the_burst_by_its_own_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let name = "new_country_mix";
    let planted = Scenarios {
        new_country: true,
        ..Scenarios::default()
    };
    let file = events(dir.path(), "planted", &traffic(12, planted));
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    // (merchant, minute) → authorizations from abroad.
    let mut abroad: std::collections::BTreeMap<(String, i64), i64> = Default::default();
    let mut last_minute = 0;
    for e in distinct_events(&file) {
        if e["event_type"] != "authorization" {
            continue;
        }
        let minute = time(&e) - time(&e).rem_euclid(60_000);
        last_minute = last_minute.max(minute);
        let away = e["ip_country"].is_string()
            && e["card_country"].is_string()
            && e["ip_country"] != e["card_country"];
        *abroad
            .entry((e["merchant_id"].as_str().unwrap().to_string(), minute))
            .or_default() += i64::from(away);
    }
    let merchants: BTreeSet<String> = abroad.keys().map(|(m, _)| m.clone()).collect();
    let mut want = BTreeSet::new();
    for m in merchants {
        let first = abroad.keys().find(|(k, _)| *k == m).unwrap().1;
        let series: Vec<(i64, i64)> = (first..=last_minute)
            .step_by(60_000)
            .map(|t| (t, abroad.get(&(m.clone(), t)).copied().unwrap_or(0)))
            .collect();
        for n in 1..series.len() {
            // The ewma_zscore(x, 0.2, 5) over the series up to minute n.
            if n < 5 {
                continue;
            }
            let (mut mean, mut var) = (series[0].1 as f64, 0.0);
            for (_, x) in &series[1..n] {
                let d = *x as f64 - mean;
                mean += 0.2 * d;
                var = 0.8 * (var + 0.2 * d * d);
            }
            if var == 0.0 {
                continue;
            }
            let z = (series[n].1 as f64 - mean) / var.sqrt();
            if z > 6.0 && series[n].1 >= 20 {
                want.insert(format!("{m} {}", series[n].0));
            }
        }
    }
    let got: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let a: Value = serde_json::from_str(r).unwrap();
            format!(
                "{} {}",
                a["merchant_id"].as_str().unwrap(),
                parse_rfc3339_millis(a["window_start"].as_str().unwrap()).unwrap()
            )
        })
        .collect();
    assert_eq!(got, want);
    let burst = GenConfig::default().start + NEW_COUNTRY_AT_MS;
    assert!(
        want.iter()
            .any(|w| w.starts_with("m_0007 ") && w.ends_with(&burst.to_string())),
        "the burst's first minute: {want:?}"
    );
    assert_eq!(from_topic(name, &file), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(12, Scenarios::default()));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

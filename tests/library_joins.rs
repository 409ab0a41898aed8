//! The library's rules over joins — a constant reference table (`VALUES`) and an interval LEFT
//! JOIN of the stream with itself: each rule's rows are pinned (`tests/golden/<query>.jsonl`),
//! equal the rule computed independently in the test, are the same from a log topic, and the
//! generated stream with the pattern taken out raises nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use paystream::generate::GenConfig;
use serde_json::Value;

use crate::golden::check_golden;
use crate::library::{distinct_events, events, field_set, from_topic, replayed, time};

fn traffic() -> GenConfig {
    GenConfig {
        events: 40_000,
        seed: 11,
        rate: 20.0,
        merchants: 12,
        cards: 50_000,
        spike_at_ms: None,
        attacks: false,
        ..GenConfig::default()
    }
}

/// Writes the lines of `from` that `keep` keeps to `to`.
fn filtered(from: &Path, to: &Path, keep: impl Fn(&Value) -> bool) {
    let text: String = std::fs::read_to_string(from)
        .unwrap()
        .lines()
        .filter(|l| keep(&serde_json::from_str(l).unwrap()))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(to, text).unwrap();
}

/// The approved authorizations with no capture or void of their payment from their time to 7
/// days after; without those authorizations, nothing.
#[test]
fn uncaptured_authorizations_are_the_approved_ones_never_captured_or_voided() {
    let dir = tempfile::tempdir().unwrap();
    let name = "uncaptured_authorizations";
    let file = events(dir.path(), "traffic", &traffic());
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    let all = distinct_events(&file);
    let mut closed: HashMap<&str, Vec<i64>> = HashMap::new();
    for e in &all {
        if matches!(e["event_type"].as_str(), Some("capture" | "void")) {
            closed
                .entry(e["payment_id"].as_str().unwrap())
                .or_default()
                .push(time(e));
        }
    }
    let open: BTreeSet<String> = all
        .iter()
        .filter(|a| a["event_type"] == "authorization" && a["status"] == "approved")
        .filter(|a| {
            let t = time(a);
            !closed
                .get(a["payment_id"].as_str().unwrap())
                .is_some_and(|c| c.iter().any(|u| (t..=t + 7 * 86_400_000).contains(u)))
        })
        .map(|a| a["payment_id"].to_string())
        .collect();
    assert!(open.len() >= 100, "{}", open.len());
    assert_eq!(field_set(&rows, "payment_id"), open);
    assert_eq!(rows.len(), open.len(), "one row per open authorization");
    assert_eq!(from_topic(name, &file), rows, "from a topic");
    let settled = dir.path().join("settled.jsonl");
    filtered(&file, &settled, |e| {
        !open.contains(&e["payment_id"].to_string()) || e["event_type"] != "authorization"
    });
    assert_eq!(replayed(name, &settled), Vec::<String>::new());
}

/// Authorizations at the four high-risk categories of at least 10.00 (1,000 minor units) whose
/// card and IP countries differ; with every IP country set to the card's, nothing.
#[test]
fn country_mismatch_flags_foreign_ips_at_high_risk_categories() {
    let dir = tempfile::tempdir().unwrap();
    let name = "country_mismatch_high_risk";
    let file = events(dir.path(), "traffic", &traffic());
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    let want: BTreeSet<String> = distinct_events(&file)
        .iter()
        .filter(|e| {
            e["event_type"] == "authorization"
                && ["5732", "4814", "7011", "5999"].contains(&e["mcc"].as_str().unwrap())
                && e["card_country"] != e["ip_country"]
                && e["amount_minor"].as_i64().unwrap() >= 1_000
        })
        .map(|e| e["event_id"].to_string())
        .collect();
    assert!(want.len() >= 20, "{}", want.len());
    assert_eq!(field_set(&rows, "event_id"), want);
    assert_eq!(from_topic(name, &file), rows, "from a topic");
    let home = dir.path().join("home.jsonl");
    let text: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| {
            let mut e: Value = serde_json::from_str(l).unwrap();
            e["ip_country"] = e["card_country"].clone();
            format!("{e}\n")
        })
        .collect();
    std::fs::write(&home, text).unwrap();
    assert_eq!(replayed(name, &home), Vec::<String>::new());
}

/// The authorizations from a card or device on the shipped example blocklists, with the
/// reasons; the stream without those cards and devices raises nothing.
#[test]
fn blocklisted_flags_listed_cards_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    let name = "blocklisted";
    let file = events(dir.path(), "traffic", &traffic());
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    let listed = |f: &str| -> HashMap<String, String> {
        std::fs::read_to_string(crate::util::repo(&format!("queries/data/{f}.csv")))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let (k, r) = l.split_once(',').unwrap();
                (k.to_string(), r.to_string())
            })
            .collect()
    };
    let (cards, devices) = (listed("blocked_cards"), listed("blocked_devices"));
    let want: BTreeSet<String> = distinct_events(&file)
        .iter()
        .filter(|e| e["event_type"] == "authorization")
        .filter_map(|e| {
            let card = cards.get(e["card_id"].as_str().unwrap());
            let device = e["device_id"].as_str().and_then(|d| devices.get(d));
            (card.is_some() || device.is_some()).then(|| {
                format!(
                    "{} {} {}",
                    e["event_id"],
                    Value::from(card.cloned()),
                    Value::from(device.cloned())
                )
            })
        })
        .collect();
    assert!(want.len() >= 10, "{}", want.len());
    let got: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r).unwrap();
            format!(
                "{} {} {}",
                v["event_id"], v["card_reason"], v["device_reason"]
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(from_topic(name, &file), rows, "from a topic");
    let unlisted = dir.path().join("unlisted.jsonl");
    filtered(&file, &unlisted, |e| {
        !cards.contains_key(e["card_id"].as_str().unwrap())
            && !e["device_id"]
                .as_str()
                .is_some_and(|d| devices.contains_key(d))
    });
    assert_eq!(replayed(name, &unlisted), Vec::<String>::new());
}

/// The first authorization of each card at each merchant (by time, then event id), where it is
/// at least 500,000 minor units; with every amount a hundred times smaller, nothing.
/// (A shorter stream: most authorizations are a card's first at its merchant.)
#[test]
fn first_card_use_large_flags_large_first_authorizations() {
    let dir = tempfile::tempdir().unwrap();
    let name = "first_card_use_large";
    let cfg = GenConfig {
        events: 10_000,
        ..traffic()
    };
    let file = events(dir.path(), "traffic", &cfg);
    let rows = replayed(name, &file);
    check_golden(name, &rows);
    let mut first: HashMap<(String, String), (i64, String, i64)> = HashMap::new();
    for e in distinct_events(&file) {
        if e["event_type"] != "authorization" {
            continue;
        }
        let this = (
            time(&e),
            e["event_id"].as_str().unwrap().to_string(),
            e["amount_minor"].as_i64().unwrap(),
        );
        first
            .entry((e["card_id"].to_string(), e["merchant_id"].to_string()))
            .and_modify(|f| {
                if (this.0, &this.1) < (f.0, &f.1) {
                    *f = this.clone();
                }
            })
            .or_insert(this);
    }
    let want: BTreeSet<String> = first
        .values()
        .filter(|(_, _, amount)| *amount >= 500_000)
        .map(|(_, id, _)| Value::from(id.as_str()).to_string())
        .collect();
    assert!(want.len() >= 50, "{}", want.len());
    assert_eq!(field_set(&rows, "event_id"), want);
    assert_eq!(from_topic(name, &file), rows, "from a topic");
    let small = dir.path().join("small.jsonl");
    let text: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| {
            let mut e: Value = serde_json::from_str(l).unwrap();
            e["amount_minor"] = Value::from(e["amount_minor"].as_i64().unwrap() / 100);
            format!("{e}\n")
        })
        .collect();
    std::fs::write(&small, text).unwrap();
    assert_eq!(replayed(name, &small), Vec::<String>::new());
}

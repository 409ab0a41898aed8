//! The library's risk rules over generated attacks (card-testing bursts, enumeration through one
//! merchant and device): each rule's rows are pinned (`tests/golden/<query>.jsonl`), equal an
//! independent computation of the rule over the generated authorizations, are the same from a
//! log topic, and a stream without attacks raises nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use paystream::generate::GenConfig;
use paystream::time::parse_rfc3339_millis;
use serde_json::Value;

use crate::golden::check_golden;
use crate::library::{events, from_topic, replayed};

/// About 25 minutes of 20 new authorizations a second over 12 merchants and 50,000 cards (a
/// card is seldom used twice, as in real traffic), with the generator's attacks or without.
fn traffic(attacks: bool) -> GenConfig {
    GenConfig {
        events: 60_000,
        seed: 11,
        rate: 20.0,
        merchants: 12,
        cards: 50_000,
        spike_at_ms: None,
        attacks,
        ..GenConfig::default()
    }
}

/// One generated authorization, as the rules read it.
#[derive(Debug, Clone)]
struct Auth {
    event_id: String,
    time: i64,
    card: String,
    device: String,
    customer: String,
    merchant: String,
    declined: bool,
}

/// The authorizations of a generated file, each once (a duplicate delivery is dropped).
fn authorizations(path: &Path) -> Vec<Auth> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["event_type"] != "authorization" || !seen.insert(e["event_id"].to_string()) {
            continue;
        }
        let s = |k: &str| e[k].as_str().unwrap().to_string();
        out.push(Auth {
            event_id: s("event_id"),
            time: parse_rfc3339_millis(e["event_time"].as_str().unwrap()).unwrap(),
            card: s("card_id"),
            device: s("device_id"),
            customer: s("customer_id"),
            merchant: s("merchant_id"),
            declined: e["status"] == "declined",
        });
    }
    out.sort_by(|a, b| (a.time, &a.event_id).cmp(&(b.time, &b.event_id)));
    out
}

/// The rows' values of `keys`, each row as one text, in a set.
fn projected(rows: &[String], keys: &[&str]) -> BTreeSet<String> {
    rows.iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r).unwrap();
            keys.iter()
                .map(|k| v[*k].to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn time_text(ms: i64) -> String {
    let mut out = b"\"".to_vec();
    paystream::time::format_rfc3339_millis(ms, &mut out);
    out.push(b'"');
    String::from_utf8(out).unwrap()
}

/// Card testing: per card, sessions of authorizations closed by 30 s without one; those with
/// at least 6 attempts and 3 declines — computed here from the authorizations — are the rows.
#[test]
fn card_testing_burst_finds_every_burst_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let name = "card_testing_burst";
    let attacked = events(dir.path(), "attacked", &traffic(true));
    let rows = replayed(name, &attacked);
    check_golden(name, &rows);
    let mut by_card: HashMap<&str, Vec<&Auth>> = HashMap::new();
    let auths = authorizations(&attacked);
    for a in &auths {
        by_card.entry(&a.card).or_default().push(a);
    }
    let mut want = BTreeSet::new();
    for (card, list) in by_card {
        let mut session: Vec<&Auth> = Vec::new();
        for a in list {
            if session.last().is_some_and(|l| a.time - l.time >= 30_000) {
                push_burst(&mut want, card, &session);
                session.clear();
            }
            session.push(a);
        }
        push_burst(&mut want, card, &session);
    }
    assert!(
        want.len() >= 5,
        "the generated stream holds bursts: {want:?}"
    );
    assert_eq!(
        projected(&rows, &["card_id", "window_start", "attempts", "declines"]),
        want
    );
    assert_eq!(from_topic(name, &attacked), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(false));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

fn push_burst(want: &mut BTreeSet<String>, card: &str, session: &[&Auth]) {
    let declines = session.iter().filter(|a| a.declined).count();
    if session.len() >= 6 && declines >= 3 {
        want.insert(format!(
            "\"{card}\" {} {} {declines}",
            time_text(session[0].time),
            session.len()
        ));
    }
}

/// Enumeration: per merchant, device and 5-minute window, at least 10 distinct cards and half
/// of the authorizations declined — computed here — are the rows.
#[test]
fn merchant_enumeration_finds_every_attack_window_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let name = "merchant_enumeration";
    let attacked = events(dir.path(), "attacked", &traffic(true));
    let rows = replayed(name, &attacked);
    check_golden(name, &rows);
    type Window = (HashSet<String>, usize, usize);
    let mut windows: HashMap<(String, String, i64), Window> = HashMap::new();
    for a in authorizations(&attacked) {
        let w = windows
            .entry((
                a.merchant.clone(),
                a.device.clone(),
                a.time - a.time % 300_000,
            ))
            .or_default();
        w.0.insert(a.card.clone());
        w.1 += 1;
        w.2 += usize::from(a.declined);
    }
    let want: BTreeSet<String> = windows
        .into_iter()
        .filter(|(_, (cards, n, declines))| cards.len() >= 10 && declines * 100 >= 50 * n)
        .map(|((m, d, start), (cards, n, declines))| {
            format!(
                "\"{m}\" \"{d}\" {} {n} {declines} {}",
                time_text(start),
                cards.len()
            )
        })
        .collect();
    assert!(
        want.len() >= 3,
        "the generated stream holds attacks: {want:?}"
    );
    assert_eq!(
        projected(
            &rows,
            &[
                "merchant_id",
                "device_id",
                "window_start",
                "authorizations",
                "declines",
                "cards"
            ]
        ),
        want
    );
    assert_eq!(from_topic(name, &attacked), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(false));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

/// Velocity per authorization: for card, device and customer, the authorizations whose 1-hour
/// count (RANGE: ties and the row exactly an hour before included) reaches 8 from below (the
/// count of those strictly before it), or whose 24-hour count reaches 30 — computed here — are
/// the rows, with their counts and the hour's distinct merchants.
#[test]
fn card_velocity_per_event_flags_each_crossing() {
    let dir = tempfile::tempdir().unwrap();
    let name = "card_velocity_per_event";
    let attacked = events(dir.path(), "attacked", &traffic(true));
    let rows = replayed(name, &attacked);
    check_golden(name, &rows);
    let auths = authorizations(&attacked);
    let mut want = BTreeSet::new();
    type Key = fn(&Auth) -> &str;
    let keys: [(&str, Key); 3] = [
        ("card", |a| &a.card),
        ("device", |a| &a.device),
        ("customer", |a| &a.customer),
    ];
    for (kind, key) in keys {
        let mut by_key: HashMap<&str, Vec<&Auth>> = HashMap::new();
        for a in &auths {
            by_key.entry(key(a)).or_default().push(a);
        }
        for (k, list) in by_key {
            for a in &list {
                let within = |ms: i64| {
                    list.iter()
                        .filter(move |b| b.time >= a.time - ms && b.time <= a.time)
                };
                let (hour, day) = (within(3_600_000).count(), within(86_400_000).count());
                let before = |ms: i64| {
                    list.iter()
                        .filter(|b| b.time >= a.time - ms && b.time < a.time)
                        .count()
                };
                let merchants: HashSet<&str> =
                    within(3_600_000).map(|b| b.merchant.as_str()).collect();
                if (hour >= 8 && before(3_600_000) < 8) || (day >= 30 && before(86_400_000) < 30) {
                    want.insert(format!(
                        "\"{kind}\" \"{k}\" \"{}\" {hour} {day} {}",
                        a.event_id,
                        merchants.len()
                    ));
                }
            }
        }
    }
    assert!(
        want.iter().filter(|w| w.starts_with("\"card\"")).count() >= 5,
        "bursts cross the card limit: {want:?}"
    );
    assert_eq!(
        projected(
            &rows,
            &[
                "key_kind",
                "key_id",
                "event_id",
                "auths_1h",
                "auths_24h",
                "merchants_1h"
            ]
        ),
        want
    );
    assert_eq!(from_topic(name, &attacked), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(false));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

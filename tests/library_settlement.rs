//! The library's daily settlement (`settlement_daily.sql`): its changelog, applied in order,
//! equals the totals computed here over every event — late money included, business dates
//! from each merchant's time zone and daily close — from a file and from a log topic.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{TimeZone, Timelike};
use paystream::generate::{GenConfig, Scenarios};
use paystream::time::parse_rfc3339_millis;
use serde_json::Value;

use crate::golden::check_golden;
use crate::library::{events, from_topic_in_order, replayed_in_order};
use crate::util::repo;

/// (merchant, currency, business date) → the row's totals, as text.
type Days = BTreeMap<(String, String, String), String>;

/// The table a changelog leaves: the latest row per key, deleted keys gone.
fn applied(rows: &[String]) -> Days {
    let mut out = Days::new();
    for r in rows {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(r).unwrap();
        let op = v.remove("op").unwrap();
        let key = (
            v["merchant_id"].as_str().unwrap().to_string(),
            v["currency"].as_str().unwrap().to_string(),
            v["business_date"].as_str().unwrap().to_string(),
        );
        match op.as_str() {
            Some("insert" | "update") => {
                out.insert(key, totals(&v));
            }
            Some("delete") => {
                out.remove(&key);
            }
            other => panic!("op {other:?} in {r}"),
        }
    }
    out
}

fn totals(v: &serde_json::Map<String, Value>) -> String {
    [
        "captures",
        "captured_minor",
        "refunded_minor",
        "chargeback_minor",
        "fees_minor",
        "net_minor",
    ]
    .iter()
    .map(|k| v[*k].to_string())
    .collect::<Vec<_>>()
    .join(" ")
}

/// The merchant's business date of `ms`: the local date in its zone, the next one at or after
/// its close (a close of 00:00 is the plain local date).
fn business_date(ms: i64, tz: &chrono_tz::Tz, close: &str) -> String {
    let local = tz.timestamp_millis_opt(ms).unwrap();
    let (h, m) = close.split_once(':').unwrap();
    let close = (h.parse::<u32>().unwrap(), m.parse::<u32>().unwrap());
    let mut date = local.date_naive();
    if close != (0, 0) && (local.hour(), local.minute()) >= close {
        date = date.succ_opt().unwrap();
    }
    date.to_string()
}

#[test]
fn settlement_daily_changelog_applies_to_the_totals_of_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let name = "settlement_daily";
    // Across London's 22:00 close (merchant m_0002: Europe/London, closing at 22:00), with
    // money events arriving minutes late and refunds after chargebacks.
    let cfg = GenConfig {
        events: 40_000,
        seed: 11,
        rate: 20.0,
        merchants: 12,
        cards: 50_000,
        start: parse_rfc3339_millis("2026-11-02T21:50:00Z").unwrap(),
        spike_at_ms: None,
        scenarios: Scenarios {
            late_money: true,
            refund_after_chargeback: true,
            ..Scenarios::default()
        },
        ..GenConfig::default()
    };
    let file = events(dir.path(), "days", &cfg);
    let rows = replayed_in_order(name, &file);
    // Pinned sorted: workers interleave their rows in no fixed order, each key's in order.
    check_golden(name, &crate::util::sorted(rows.clone()));

    let merchants: HashMap<String, (chrono_tz::Tz, String)> =
        std::fs::read_to_string(repo("queries/data/merchants.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_string(), (f[1].parse().unwrap(), f[2].to_string()))
            })
            .collect();
    let mut sums: BTreeMap<(String, String, String), [i64; 5]> = BTreeMap::new();
    let mut seen = HashSet::new();
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let kind = e["event_type"].as_str().unwrap();
        if !matches!(kind, "capture" | "refund" | "chargeback")
            || !seen.insert(e["event_id"].to_string())
        {
            continue;
        }
        let m = e["merchant_id"].as_str().unwrap();
        let (tz, close) = &merchants[m];
        let t = parse_rfc3339_millis(e["event_time"].as_str().unwrap()).unwrap();
        let s = sums
            .entry((
                m.to_string(),
                e["currency"].as_str().unwrap().to_string(),
                business_date(t, tz, close),
            ))
            .or_default();
        let amount = e["amount_minor"].as_i64().unwrap();
        match kind {
            "capture" => {
                s[0] += 1;
                s[1] += amount;
            }
            "refund" => s[2] += amount,
            _ => s[3] += amount,
        }
        s[4] += e["fee_minor"].as_i64().unwrap_or(0);
    }
    let want: Days = sums
        .into_iter()
        .map(|(k, s)| {
            let net = s[1] - s[2] - s[3] - s[4];
            (
                k,
                format!("{} {} {} {} {} {net}", s[0], s[1], s[2], s[3], s[4]),
            )
        })
        .collect();
    // Some merchant's day ends within the stream (London closes at 22:00), so its rows span
    // two business dates.
    let mut dates: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (m, _, d) in want.keys() {
        dates.entry(m).or_default().insert(d);
    }
    assert!(dates.values().any(|d| d.len() >= 2), "{dates:?}");
    // Late money is in the stream (delivered minutes behind the latest event time), and the
    // totals above, which count it, are what the changelog leaves.
    let mut latest = 0;
    let mut late = 0;
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let t = parse_rfc3339_millis(e["event_time"].as_str().unwrap()).unwrap();
        if latest - t >= 5 * 60_000 {
            late += 1;
        }
        latest = latest.max(t);
    }
    assert!(late >= 10, "{late} late money events");
    assert_eq!(applied(&rows), want);
    assert_eq!(
        applied(&from_topic_in_order(name, &file)),
        want,
        "from a topic"
    );
}
